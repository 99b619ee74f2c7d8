package api

import "golang.org/x/sys/unix"

// syscallUmask sets the process umask so that the socket is never, even
// briefly, accessible to others.
func syscallUmask(mask int) int { return unix.Umask(mask) }
