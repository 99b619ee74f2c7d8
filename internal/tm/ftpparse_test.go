package tm

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFTPParsers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for an error
	}{
		{"10,0,1,11,195,80", "10.0.1.11:50000"},
		{" 10, 0, 1, 11, 0, 21 ", "10.0.1.11:21"},
		{"10,0,1,11,256,0", ""},
		{"10,0,1,11,1", ""},
		{"a,b,c,d,e,f", ""},
	} {
		got, err := parseHostPort(tc.in)
		if (err != nil) != (tc.want == "") || (err == nil && got.String() != tc.want) {
			t.Errorf("parseHostPort(%q) = %v, %v; want %q", tc.in, got, err, tc.want)
		}
		if err == nil {
			if back, _ := parseHostPort(formatHostPort(got)); back != got {
				t.Errorf("formatHostPort round trip of %v: %v", got, back)
			}
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"|1|132.235.1.2|6275|", "132.235.1.2:6275"},
		{"|2|1080::8:800:200C:417A|5282|", "[1080::8:800:200c:417a]:5282"},
		{"!1!10.0.0.1!21!", "10.0.0.1:21"},
		{"|2|10.0.0.1|21|", ""},     // family mismatch
		{"|1|10.0.0.1|0|", ""},      // port 0
		{"|1|10.0.0.1|21", ""},      // no final delimiter
		{"1|10.0.0.1|21|", ""},      // digit delimiter
		{"|1|fe80::1%eth0|21|", ""}, // zone
		{"", ""},
	} {
		got, err := parseEPRT(tc.in)
		if (err != nil) != (tc.want == "") || (err == nil && got.String() != tc.want) {
			t.Errorf("parseEPRT(%q) = %v, %v; want %q", tc.in, got, err, tc.want)
		}
		if err == nil {
			if back, _ := parseEPRT(formatEPRT(got)); back != got {
				t.Errorf("formatEPRT round trip of %v: %v", got, back)
			}
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"227 Entering Passive Mode (10,2,0,11,117,48).\r\n", "10.2.0.11:30000"},
		{"227 Entering Passive Mode 10,2,0,11,117,48\r\n", "10.2.0.11:30000"},
		{"227 =10,2,0,11,117,48", "10.2.0.11:30000"},
		{"227 Entering Passive Mode.\r\n", ""},
		{"227 ", ""},
	} {
		got, err := parse227(tc.in)
		if (err != nil) != (tc.want == "") || (err == nil && got.String() != tc.want) {
			t.Errorf("parse227(%q) = %v, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want uint16
	}{
		{"229 Entering Extended Passive Mode (|||6446|)\r\n", 6446},
		{"229 ok (!!!21!)", 21},
		{"229 Entering Extended Passive Mode (|||0|)", 0},
		{"229 (||6446|)", 0},
		{"229 (|||)", 0},
		{"229 no parens", 0},
	} {
		got, err := parse229(tc.in)
		if (err != nil) != (tc.want == 0) || got != tc.want {
			t.Errorf("parse229(%q) = %v, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	if c, a := ftpCommand("eprt |1|10.0.0.1|21|\r\n"); c != "EPRT" || a != "|1|10.0.0.1|21|" {
		t.Errorf("ftpCommand: %q %q", c, a)
	}
}

// FuzzFTPParsers: no input makes a parser panic or accept something its
// formatter does not round-trip.
func FuzzFTPParsers(f *testing.F) {
	for _, s := range []string{"10,0,1,11,195,80", "|1|132.235.1.2|6275|", "|2|::1|21|",
		"227 Entering Passive Mode (10,2,0,11,117,48).", "229 Entering Extended Passive Mode (|||6446|)", "229 (|||)", "227 ,,,,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxFTPLine {
			return
		}
		if ap, err := parseHostPort(s); err == nil {
			if back, err := parseHostPort(formatHostPort(ap)); err != nil || back != ap {
				t.Fatalf("PORT %q → %v → %v %v", s, ap, back, err)
			}
		}
		if ap, err := parseEPRT(s); err == nil {
			if ap.Port() == 0 || !ap.Addr().IsValid() {
				t.Fatalf("EPRT %q accepted %v", s, ap)
			}
			if back, err := parseEPRT(formatEPRT(ap)); err != nil || back != ap {
				t.Fatalf("EPRT %q → %v → %v %v", s, ap, back, err)
			}
		}
		if ap, err := parse227(s); err == nil && !ap.Addr().Is4() {
			t.Fatalf("227 %q accepted %v", s, ap)
		}
		if p, err := parse229(s); err == nil && p == 0 {
			t.Fatalf("229 %q accepted port 0", s)
		}
		if c, _ := ftpCommand(s); c != strings.ToUpper(c) {
			t.Fatalf("command %q not upper-cased", c)
		}
		_ = netip.AddrPort{}
	})
}
