package config

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// aliasBomb returns a YAML document whose aliases expand to 10^levels nodes
// ("billion laughs" with levels = 9) in a few hundred bytes per level.
func aliasBomb(levels int) string {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// wideBomb returns a config whose services list names one service n times
// through an alias, and that service names a pool of m TMs: n×m nodes the
// decoder walks, from a file of about 6×(n+m) bytes.
func wideBomb(n, m int) string {
	var b strings.Builder
	b.WriteString(minimal)
	b.WriteString("  - &s {name: x, vip: 10.0.0.1, protocol: tcp, traffic_managers: [")
	for i := 0; i < m; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "t%d", i)
	}
	b.WriteString("]}\n")
	for i := 0; i < n; i++ {
		b.WriteString("  - *s\n")
	}
	return b.String()
}

// TestAliasBomb checks that a document whose aliases expand past MaxNodes is
// refused with an error and a line, before it is expanded: with bounded
// memory, under known keys (where the decoder walks) and unknown ones.
func TestAliasBomb(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
	}{
		// A million nodes where the decoder walks, from 13 KB.
		{"1e6 services", wideBomb(1000, 1000)},
		// Billion laughs, under an unknown key.
		{"1e9 at the top", minimal + aliasBomb(8)},
		{"1e9 in a pool", aliasBomb(8) + minimal + "  - {name: x, vip: 10.0.0.1, protocol: tcp, traffic_managers: *a8}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = Parse([]byte(tc.src), "bomb.yaml") })
			if err == nil {
				t.Fatal("no error")
			}
			es := Errors(err)
			if len(es) != 1 || !strings.Contains(es[0].Msg, "YAML nodes") || es[0].Line == 0 {
				t.Errorf("err = %.500v, want one error with a line about the number of YAML nodes", err)
			}
			if n > 100<<20 {
				t.Errorf("Parse of %d bytes allocated %d MB, want < 100 MB", len(tc.src), n>>20)
			}
			t.Logf("%d bytes: %.200v; allocated %d KB", len(tc.src), err, n>>10)
		})
	}
	// The limit leaves room for the biggest config that uses aliases: 1024
	// services that each name the same pool of 255 TMs.
	var b strings.Builder
	b.WriteString("distributor: {id: d1, interfaces: [{name: ext0, role: external}]}\nselection: {max_services: 1024}\ntraffic_managers:\n")
	var ids []string
	for i := 0; i < MaxTrafficManagers; i++ {
		fmt.Fprintf(&b, "  - {id: t%d, address: 10.1.%d.%d}\n", i, i/200, i%200+1)
		ids = append(ids, fmt.Sprintf("t%d", i))
	}
	b.WriteString("services:\n  - {name: s0, vip: 10.0.0.1, port: 1, protocol: tcp, traffic_managers: &p [" + strings.Join(ids, ", ") + "]}\n")
	for i := 1; i < MaxMaxServices; i++ {
		fmt.Fprintf(&b, "  - {name: s%d, vip: 10.0.0.1, port: %d, protocol: tcp, traffic_managers: *p}\n", i, i+1)
	}
	var err error
	n := allocated(func() { _, err = Parse([]byte(b.String()), "big.yaml") })
	if err != nil {
		t.Errorf("1024 services × 255 TMs: %.500v", err)
	}
	t.Logf("1024 services × 255 TMs: %d bytes, allocated %d MB", b.Len(), n>>20)
}

// TestLoadNotRegular checks that Load refuses a device, a directory and a
// FIFO, which would read forever or fail obscurely, without reading them.
func TestLoadNotRegular(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{"/dev/zero", "not a regular file but a character device"},
		{dir, "not a regular file but a directory"},
	} {
		_, err := Load(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), tc.path+": ") {
			t.Errorf("Load(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
}

// TestLoadTooLarge checks that Load and Parse refuse more than MaxFileSize
// bytes, even of a valid config.
func TestLoadTooLarge(t *testing.T) {
	const maxSize = 1 << 20 // MaxFileSize, written out so that the test predates it
	big := minimal + strings.Repeat("# padding, a comment line of forty bytes\n", maxSize/40)
	if len(big) <= maxSize {
		t.Fatalf("test file of %d bytes is not too large", len(big))
	}
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("Load of %d bytes: err = %v, want larger than 1048576 bytes", len(big), err)
	}
	if _, err := Parse([]byte(big), "big.yaml"); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("Parse of %d bytes: err = %v", len(big), err)
	}
	// Exactly the limit is fine.
	ok := big[:maxSize]
	ok = ok[:strings.LastIndexByte(ok, '\n')+1]
	if _, err := Parse([]byte(ok), "ok.yaml"); err != nil {
		t.Errorf("Parse of %d bytes: %v", len(ok), err)
	}
}

// TestTooManyErrors checks that at most MaxErrors errors are reported, then
// how many were left out.
func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal)
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "  - {name: s%d, vip: 10.0.%d.%d, port: 70000, protocol: tcp, traffic_managers: [tm9]}\n", i, i/250, i%250+1)
	}
	_, err := Parse([]byte(b.String()), "many.yaml")
	es := Errors(err)
	if len(es) != 51 {
		t.Fatalf("%d errors, want 50 and a count", len(es))
	}
	// services[0] is valid: the first is the too-many-services error (line
	// 11), then port errors from line 17 on, in order.
	if !strings.Contains(es[0].Msg, "5001 services are more than selection.max_services") {
		t.Errorf("first error %v", es[0])
	}
	for i := 1; i < 50; i++ {
		if es[i].Line < es[i-1].Line {
			t.Errorf("error %d at line %d after line %d", i, es[i].Line, es[i-1].Line)
		}
	}
	if last := es[50]; last.Msg != "and 9951 more errors (reporting the first 50, MaxErrors)" || last.Source != "many.yaml" {
		t.Errorf("last error %q", last)
	}
}

// TestNotText checks that binary and invalid UTF-8 files get an error with a
// line.
func TestNotText(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		line int
		want string
	}{
		{"NUL", minimal[:40] + "\x00" + minimal[40:], 4, "control character U+0000"},
		{"invalid UTF-8", strings.Replace(minimal, "name: web", "name: w\xffb", 1), 12, "byte 0xff at offset"},
		{"truncated UTF-8", minimal + "# caf\xc3", 17, "byte 0xc3"},
		{"ELF", "\x7fELF\x02\x01\x01\x00\x00", 1, "control character U+007F"},
	} {
		_, err := Parse([]byte(tc.src), "bin.yaml")
		es := Errors(err)
		if len(es) != 1 || es[0].Line != tc.line || !strings.Contains(es[0].Msg, tc.want) {
			t.Errorf("%s: err = %v, want line %d and %q", tc.name, err, tc.line, tc.want)
		}
	}
	// UTF-8 text is fine, with a byte order mark too.
	if _, err := Parse([]byte("\ufeff"+strings.Replace(minimal, "max_flows: 1000000", "max_flows: 1000000 # café, 流量", 1)), "u.yaml"); err != nil {
		t.Errorf("UTF-8 text: %v", err)
	}
}
