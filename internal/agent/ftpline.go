package agent

import (
	"bytes"
	"net/netip"
	"strconv"
)

// FTP lines that make the kernel's FTP helper create an expectation.
const (
	ftpNone    = iota
	ftpPassive // 227 or 229 reply: the client will connect to the port
	ftpActive  // PORT or EPRT command: the server will connect to the address and port
)

// maxFTPLines bounds the lines of one packet the agent reads.
const maxFTPLines = 16

// parseFTP finds, in the TCP payload of an FTP control packet, the first
// line the kernel's FTP helper (nf_conntrack_ftp) turns into an
// expectation: a 227 (PASV) or 229 (EPSV) reply, or a PORT or EPRT
// command. It returns the kind, the port, and for PORT and EPRT the
// address (a 227's address is ignored: nf_nat_ftp rewrites it to the
// address the client reached). It reads at most maxFTPLines lines and
// never allocates per byte; anything malformed is ftpNone.
func parseFTP(p []byte) (kind int, addr netip.Addr, port uint16) {
	for n := 0; n < maxFTPLines && len(p) > 0; n++ {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		line = bytes.TrimRight(line, "\r")
		switch {
		case bytes.HasPrefix(line, []byte("227 ")):
			// 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)
			i := bytes.IndexByte(line, '(')
			j := bytes.LastIndexByte(line, ')')
			if i < 0 || j < i {
				continue
			}
			if _, pt, ok := sixNumbers(line[i+1 : j]); ok {
				return ftpPassive, netip.Addr{}, pt
			}
		case bytes.HasPrefix(line, []byte("229 ")):
			// 229 Entering Extended Passive Mode (|||port|)
			i := bytes.IndexByte(line, '(')
			j := bytes.LastIndexByte(line, ')')
			if i < 0 || j < i {
				continue
			}
			f := bytes.Split(line[i+1:j], []byte{'|'})
			if len(f) != 5 || len(f[0]) != 0 || len(f[4]) != 0 {
				continue
			}
			if pt, ok := portOf(f[3]); ok {
				return ftpPassive, netip.Addr{}, pt
			}
		case hasPrefixFold(line, "PORT "):
			if a, pt, ok := sixNumbers(bytes.TrimSpace(line[5:])); ok {
				return ftpActive, a, pt
			}
		case hasPrefixFold(line, "EPRT "):
			// EPRT |1|addr|port|  (any delimiter the first byte names)
			arg := bytes.TrimSpace(line[5:])
			if len(arg) < 2 {
				continue
			}
			f := bytes.Split(arg, arg[:1])
			if len(f) != 5 || len(f[0]) != 0 || len(f[4]) != 0 {
				continue
			}
			a, err := netip.ParseAddr(string(f[2]))
			if err != nil || (string(f[1]) == "1") != a.Is4() || (string(f[1]) != "1" && string(f[1]) != "2") {
				continue
			}
			if pt, ok := portOf(f[3]); ok {
				return ftpActive, a, pt
			}
		}
	}
	return ftpNone, netip.Addr{}, 0
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

// sixNumbers reads "h1,h2,h3,h4,p1,p2".
func sixNumbers(b []byte) (netip.Addr, uint16, bool) {
	f := bytes.Split(b, []byte{','})
	if len(f) != 6 {
		return netip.Addr{}, 0, false
	}
	var v [6]byte
	for i, s := range f {
		n, err := strconv.ParseUint(string(bytes.TrimSpace(s)), 10, 8)
		if err != nil {
			return netip.Addr{}, 0, false
		}
		v[i] = byte(n)
	}
	port := uint16(v[4])<<8 | uint16(v[5])
	if port == 0 {
		return netip.Addr{}, 0, false
	}
	return netip.AddrFrom4([4]byte(v[:4])), port, true
}

func portOf(b []byte) (uint16, bool) {
	n, err := strconv.ParseUint(string(b), 10, 16)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint16(n), true
}
