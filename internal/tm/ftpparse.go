package tm

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The FTP address syntaxes (RFC 959 PORT and 227, RFC 2428 EPRT and 229).
// Inputs come from clients and servers: every parser is bounded by the line
// length the proxy reads (maxFTPLine) and refuses anything it does not fully
// understand with an error that says what was wrong.

// maxFTPLine is the longest control line the FTP mode parses; longer lines
// are passed through unchanged (no address command or reply is that long).
const maxFTPLine = 2048

var errFTPSyntax = errors.New("ftp: bad address syntax")

// parseHostPort parses "h1,h2,h3,h4,p1,p2" (PORT's argument and the numbers
// of a 227 reply): an IPv4 address and a port, each number 0..255.
func parseHostPort(s string) (netip.AddrPort, error) {
	parts := strings.Split(strings.TrimSpace(s), ",")
	if len(parts) != 6 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: want h1,h2,h3,h4,p1,p2", errFTPSyntax, trunc(s))
	}
	var n [6]byte
	for i, p := range parts {
		v, err := strconv.ParseUint(strings.TrimSpace(p), 10, 8)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: %q: number %d is not 0..255", errFTPSyntax, trunc(s), i+1)
		}
		n[i] = byte(v)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{n[0], n[1], n[2], n[3]}), uint16(n[4])<<8|uint16(n[5])), nil
}

// formatHostPort is the inverse of parseHostPort (IPv4 only).
func formatHostPort(ap netip.AddrPort) string {
	a := ap.Addr().Unmap().As4()
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
}

// parseEPRT parses EPRT's argument "<d>af<d>addr<d>port<d>", where <d> is any
// printable ASCII character other than a digit, and af is 1 (IPv4) or 2
// (IPv6).
func parseEPRT(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] < 33 || s[0] > 126 || (s[0] >= '0' && s[0] <= '9') {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT %q: no delimiter", errFTPSyntax, trunc(s))
	}
	parts := strings.Split(s, string(s[0]))
	if len(parts) != 5 || parts[0] != "" || parts[4] != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT %q: want <d>af<d>addr<d>port<d>", errFTPSyntax, trunc(s))
	}
	a, err := netip.ParseAddr(parts[2])
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT %q: bad address", errFTPSyntax, trunc(s))
	}
	switch {
	case parts[1] == "1" && a.Is4(), parts[1] == "2" && a.Is6() && !a.Is4In6():
	default:
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT %q: family %q does not match the address", errFTPSyntax, trunc(s), parts[1])
	}
	port, err := strconv.ParseUint(parts[3], 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT %q: port is not 1..65535", errFTPSyntax, trunc(s))
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// formatEPRT is the inverse of parseEPRT, with "|" as the delimiter.
func formatEPRT(ap netip.AddrPort) string {
	af := "2"
	if ap.Addr().Unmap().Is4() {
		af = "1"
	}
	return fmt.Sprintf("|%s|%s|%d|", af, ap.Addr().Unmap(), ap.Port())
}

// parse227 finds the address in a "227 Entering Passive Mode
// (h1,h2,h3,h4,p1,p2)" reply. The text around the numbers varies between
// servers (some omit the parentheses): the first run of digits and commas
// is taken.
func parse227(line string) (netip.AddrPort, error) {
	i := strings.IndexAny(line[min(4, len(line)):], "0123456789")
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: 227 %q: no address", errFTPSyntax, trunc(line))
	}
	rest := line[min(4, len(line))+i:]
	j := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != ',' })
	if j >= 0 {
		rest = rest[:j]
	}
	return parseHostPort(rest)
}

// parse229 finds the port in a "229 Entering Extended Passive Mode
// (<d><d><d>port<d>)" reply.
func parse229(line string) (uint16, error) {
	i := strings.IndexByte(line, '(')
	j := strings.LastIndexByte(line, ')')
	if i < 0 || j < i+5 {
		return 0, fmt.Errorf("%w: 229 %q: no (<d><d><d>port<d>)", errFTPSyntax, trunc(line))
	}
	in := line[i+1 : j]
	d := in[0]
	if d < 33 || d > 126 || (d >= '0' && d <= '9') || in[1] != d || in[2] != d || in[len(in)-1] != d {
		return 0, fmt.Errorf("%w: 229 %q: bad delimiters", errFTPSyntax, trunc(line))
	}
	port, err := strconv.ParseUint(in[3:len(in)-1], 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("%w: 229 %q: port is not 1..65535", errFTPSyntax, trunc(line))
	}
	return uint16(port), nil
}

// ftpCommand splits a client line into its upper-cased command and argument
// (without the line end).
func ftpCommand(line string) (cmd, arg string) {
	line = strings.TrimRight(line, "\r\n")
	cmd, arg, _ = strings.Cut(line, " ")
	return strings.ToUpper(cmd), arg
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
