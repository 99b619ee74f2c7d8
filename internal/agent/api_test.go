package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/signal"
)

var testKey = bytes.Repeat([]byte{0x5a}, 32)

// udpSink is a real UDP control receiver on loopback: it opens and checks
// what the agent sends, as the distributor's UDP transport would.
type udpSink struct {
	pc   net.PacketConn
	msgs chan signal.Message
}

func newSink(t testing.TB) (*udpSink, *signal.UDPSender) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &udpSink{pc: pc, msgs: make(chan signal.Message, 1<<16)}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			_, _, m, err := signal.OpenUDP(buf[:n], func(id string) ([]byte, bool) { return testKey, id == "tm1" })
			if err != nil {
				t.Errorf("sink: datagram refused: %v", err)
				continue
			}
			s.msgs <- m
		}
	}()
	snd, err := signal.NewUDPSender(netip.MustParseAddrPort(pc.LocalAddr().String()), "tm1", testKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snd.Close(); pc.Close() })
	return s, snd
}

func (s *udpSink) next(t testing.TB) signal.Message {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram within 5 s")
		return signal.Message{}
	}
}

func testConfig() agent.Config {
	return agent.Config{
		VIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.100/32"), netip.MustParsePrefix("fd00:100::100/128")},
		SNAT: []netip.Prefix{netip.MustParsePrefix("10.1.255.1/32")},
	}
}

// startAPI runs an agent over a UDP sink with its API on a socket.
func startAPI(t testing.TB) (*agent.Agent, *udpSink, string) {
	t.Helper()
	sink, snd := newSink(t)
	a, err := agent.New(testConfig(), snd)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := agent.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l); close(done) }()
	go a.Send(ctx)
	t.Cleanup(func() { cancel(); <-done })
	return a, sink, path
}

func dialAPI(t testing.TB, path string) *agent.Client {
	t.Helper()
	c, err := agent.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const goodMemorize = `{"op":"memorize","key":{"src":"10.0.1.11:40000","dst":"10.0.0.100:80","proto":"tcp"},"timeout":300,"mirror":true}`

// TestAPIRefusesAndKeepsServing: malformed and oversized requests get a
// clear error on the same connection, which keeps serving; a good request
// after them is sent to the distributor exactly as asked.
func TestAPIRefusesAndKeepsServing(t *testing.T) {
	a, sink, path := startAPI(t)
	c := dialAPI(t, path)
	bad := []struct{ line, want string }{
		{`{"op":"memorize"`, "not a JSON request object"},
		{`[1,2]`, "not a JSON request object"},
		{`{"op":"explode"}`, `op: unknown op "explode"`},
		{`{"key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"tcp"}}`, "op: missing"},
		{`{"op":"memorize"}`, "key: missing"},
		{`{"op":"memorize","key":{"src":"1.2.3.4","dst":"10.0.0.100:80","proto":"tcp"}}`, "key.src: want ADDR:PORT"},
		{`{"op":"memorize","key":{"src":"1.2.3.4:1","dst":"[fd00::1]:80","proto":"tcp"}}`, "different families"},
		{`{"op":"memorize","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"sctpx"}}`, "key.proto: want tcp, udp"},
		{`{"op":"memorize","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"tcp"},"timeout":70000}`, "over the MEMORIZE limit"},
		{`{"op":"memorize","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"tcp"},"bogus":1}`, `unknown field "bogus"`},
		{`{"op":"age","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"tcp"}}`, "timeout: missing"},
		{`{"op":"relate","parent":{"src":"1.2.3.4:1","dst":"10.0.0.100:21","proto":"tcp"},"second":{"src":"1.2.3.4:0","dst":"10.0.0.100:5000","proto":"tcp"},"mask":["src","src"]}`, `field "src" twice`},
		{`{"op":"batch","ops":[]}`, "ops: a batch holds 1 to 64 ops, not 0"},
		{`{"op":"batch","ops":[` + goodMemorize + `,{"op":"forget"}]}`, "ops[1].key: missing"},
		{`{"op":"batch","ops":[{"op":"batch","ops":[` + goodMemorize + `]}]}`, `ops[0].op: batch cannot be inside a batch`},
		{goodMemorize + goodMemorize, "trailing data"},
		{``, "empty request"},
	}
	for _, b := range bad {
		_, err := c.DoRaw([]byte(b.line))
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("request %.60q: error %v, want one containing %q", b.line, err, b.want)
		}
	}
	var batch []string
	for range agent.MaxBatch + 1 {
		batch = append(batch, goodMemorize)
	}
	if _, err := c.DoRaw([]byte(`{"op":"batch","ops":[` + strings.Join(batch, ",") + `]}`)); err == nil || !strings.Contains(err.Error(), "1 to 64 ops, not 65") {
		t.Errorf("65-op batch: %v", err)
	}
	huge := `{"op":"memorize","pad":"` + strings.Repeat("x", agent.MaxRequest) + `"}`
	if _, err := c.DoRaw([]byte(huge)); err == nil || !strings.Contains(err.Error(), "over the limit of 65536 bytes") {
		t.Errorf("oversized request: %v", err)
	}

	rep, err := c.DoRaw([]byte(goodMemorize))
	if err != nil || rep.Ops != 1 {
		t.Fatalf("good request after the bad ones: %+v, %v", rep, err)
	}
	m := sink.next(t)
	want := signal.Memorize{
		Key:    signal.Key{Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.0.100"), SrcPort: 40000, DstPort: 80, Proto: 6},
		TM:     signal.Self,
		Mirror: true, Timeout: 300 * time.Second,
	}
	if len(m.Ops) != 1 || fmt.Sprint(m.Ops[0]) != fmt.Sprint(want) {
		t.Fatalf("sent %+v, want %+v", m.Ops, want)
	}
	s := a.Stats()
	if s.APIErrors != uint64(len(bad))+2 || s.APIOps != 1 {
		t.Fatalf("stats %+v: want %d API errors, 1 API op", s, len(bad)+2)
	}
}

// TestAPIBatch: a batch of 20 ops goes out as messages of at most 8 ops,
// in order.
func TestAPIBatch(t *testing.T) {
	_, sink, path := startAPI(t)
	c := dialAPI(t, path)
	var ops []agent.APIRequest
	for i := range 20 {
		to := uint32(i)
		ops = append(ops, agent.APIRequest{Op: "age", Key: &agent.APIKey{Src: fmt.Sprintf("10.0.1.11:%d", 1000+i), Dst: "10.0.0.100:80", Proto: "udp"}, Timeout: &to})
	}
	rep, err := c.Do(agent.APIRequest{Op: "batch", Ops: ops})
	if err != nil || rep.Ops != 20 {
		t.Fatalf("batch: %+v, %v", rep, err)
	}
	got := 0
	for _, n := range []int{8, 8, 4} {
		m := sink.next(t)
		if len(m.Ops) != n {
			t.Fatalf("message of %d ops, want %d", len(m.Ops), n)
		}
		for _, op := range m.Ops {
			age, ok := op.(signal.Age)
			if !ok || age.Key.SrcPort != uint16(1000+got) || age.Timeout != time.Duration(got)*time.Second {
				t.Fatalf("op %d: %+v", got, op)
			}
			got++
		}
	}
}

// TestAPISlotsAndSlowClient: a client that never reads its replies does
// not stop others from being served.
func TestAPISlowClient(t *testing.T) {
	_, _, path := startAPI(t)
	slow, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// Requests without reading: replies pile up in the socket buffer.
	go func() {
		line := []byte(`{"op":"stats"}` + "\n")
		for range 100000 {
			if _, err := slow.Write(line); err != nil {
				return
			}
		}
	}()
	c := dialAPI(t, path)
	if rep, err := c.Do(agent.APIRequest{Op: "stats"}); err != nil || rep.Stats == nil {
		t.Fatalf("stats beside a slow client: %+v, %v", rep, err)
	}
}

func TestKeyOf(t *testing.T) {
	a, err := agent.New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	tup := func(src, dst string, proto uint8) agent.Tuple {
		s, d := ap(src), ap(dst)
		return agent.Tuple{Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port(), Proto: proto}
	}
	cases := []struct {
		name        string
		orig, reply agent.Tuple
		want        string // key src>dst, "" = not owned
	}{
		{"client to VIP", tup("10.0.1.11:40000", "10.0.0.100:80", 6), tup("10.0.0.100:80", "10.0.1.11:40000", 6), "10.0.1.11:40000>10.0.0.100:80"},
		{"IPv6 client to VIP", tup("[fd00:1::11]:40000", "[fd00:100::100]:80", 17), tup("[fd00:100::100]:80", "[fd00:1::11]:40000", 17), "[fd00:1::11]:40000>[fd00:100::100]:80"},
		{"TM to server from SNAT", tup("10.1.255.1:20001", "10.2.0.11:9000", 6), tup("10.2.0.11:9000", "10.1.255.1:20001", 6), "10.2.0.11:9000>10.1.255.1:20001"},
		{"masqueraded to SNAT", tup("10.1.0.11:20001", "10.2.0.11:9000", 6), tup("10.2.0.11:9000", "10.1.255.1:30000", 6), "10.2.0.11:9000>10.1.255.1:30000"},
		{"host's own traffic", tup("10.1.0.11:20001", "10.2.0.11:22", 6), tup("10.2.0.11:22", "10.1.0.11:20001", 6), ""},
		{"ICMP to VIP", tup("10.0.1.11:0", "10.0.0.100:0", 1), tup("10.0.0.100:0", "10.0.1.11:0", 1), ""},
	}
	for _, c := range cases {
		k, ok := a.KeyOf(c.orig, c.reply)
		got := ""
		if ok {
			got = netip.AddrPortFrom(k.Src, k.SrcPort).String() + ">" + netip.AddrPortFrom(k.Dst, k.DstPort).String()
		}
		if got != c.want {
			t.Errorf("%s: key %q, want %q", c.name, got, c.want)
		}
	}
}

func TestRelateOf(t *testing.T) {
	a, err := agent.New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	client, vip := netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.0.100")
	master := agent.Tuple{Src: client, Dst: vip, SrcPort: 40000, DstPort: 21, Proto: 6}
	// Passive: the client will connect to VIP:50000 from any port.
	r, ok := a.RelateOf(agent.Expectation{
		Master: master,
		Tuple:  agent.Tuple{Src: client, Dst: vip, DstPort: 50000, Proto: 6},
		Mask:   agent.Tuple{Src: netip.MustParseAddr("255.255.255.255"), Dst: netip.MustParseAddr("255.255.255.255"), DstPort: 0xffff, Proto: 0xff},
	})
	want := signal.FieldProto | signal.FieldSrc | signal.FieldDst | signal.FieldDstPort
	if !ok || r.Mask != want || r.Second.Src != client || r.Second.Dst != vip || r.Second.DstPort != 50000 || r.Second.SrcPort != 0 || r.Parent.DstPort != 21 {
		t.Fatalf("passive: %+v %v", r, ok)
	}
	// Active: the TM side connects to the client's port 6000; its answers
	// come from client:6000 to the VIP.
	r, ok = a.RelateOf(agent.Expectation{
		Master: master,
		Tuple:  agent.Tuple{Src: netip.MustParseAddr("10.2.0.11"), Dst: client, DstPort: 6000, Proto: 6},
		Mask:   agent.Tuple{Src: netip.MustParseAddr("255.255.255.255"), Dst: netip.MustParseAddr("255.255.255.255"), DstPort: 0xffff, Proto: 0xff},
	})
	want = signal.FieldProto | signal.FieldSrc | signal.FieldDst | signal.FieldSrcPort
	if !ok || r.Mask != want || r.Second.Src != client || r.Second.SrcPort != 6000 || r.Second.Dst != vip || r.Second.DstPort != 0 {
		t.Fatalf("active: %+v %v", r, ok)
	}
	if _, err := (signal.Message{Ops: []signal.Op{r}}).Marshal(); err != nil {
		t.Fatal(err)
	}
	// Not the TM's master: nothing.
	if _, ok := a.RelateOf(agent.Expectation{Master: agent.Tuple{Src: client, Dst: client, DstPort: 21, Proto: 6}}); ok {
		t.Fatal("related an expectation of a flow that is not the TM's")
	}
}

// TestRelateOfNAT: an active FTP data connection through a TM that NATs
// FTP to the server (nf_nat_ftp): the helper expects the server at the
// SNAT address's port 30001, mapped to the client's port 6000 from the
// PORT command. The RELATE covers the client's answers (client:6000 →
// VIP); InboundKeyOf is the server's SYN (server:20 → SNAT:30001); once
// the connection exists, InboundOf gives that key and KeyOf the client's.
func TestRelateOfNAT(t *testing.T) {
	a, err := agent.New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	client, vip := netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.0.100")
	server, snat := netip.MustParseAddr("10.2.0.11"), netip.MustParseAddr("10.1.255.1")
	ones := netip.MustParseAddr("255.255.255.255")
	e := agent.Expectation{
		Master:  agent.Tuple{Src: client, Dst: vip, SrcPort: 40000, DstPort: 21, Proto: 6},
		Tuple:   agent.Tuple{Src: server, Dst: snat, DstPort: 30001, Proto: 6},
		Mask:    agent.Tuple{Src: ones, Dst: ones, DstPort: 0xffff, Proto: 0xff},
		NATPort: 6000, Helper: "ftp", // nf_nat_ftp saves no address

	}
	r, ok := a.RelateOf(e)
	want := signal.FieldProto | signal.FieldSrc | signal.FieldDst | signal.FieldSrcPort
	if !ok || r.Mask != want || r.Second.Src != client || r.Second.SrcPort != 6000 || r.Second.Dst != vip || r.Second.DstPort != 0 {
		t.Fatalf("relate: %+v %v", r, ok)
	}
	k, ok := a.InboundKeyOf(e)
	if wantK := (signal.Key{Src: server, SrcPort: 20, Dst: snat, DstPort: 30001, Proto: 6}); !ok || k != wantK {
		t.Fatalf("inbound key %+v %v, want %+v", k, ok, wantK)
	}
	// Only the FTP helper's, only to an SNAT address, only with the
	// server's port unknown.
	for name, bad := range map[string]func(*agent.Expectation){
		"helper":   func(e *agent.Expectation) { e.Helper = "sip" },
		"to a VIP": func(e *agent.Expectation) { e.Tuple.Dst = vip },
		"sport":    func(e *agent.Expectation) { e.Mask.SrcPort = 0xffff },
		"master":   func(e *agent.Expectation) { e.Master.Dst = client },
	} {
		e2 := e
		bad(&e2)
		if k, ok := a.InboundKeyOf(e2); ok {
			t.Errorf("%s: inbound key %+v", name, k)
		}
	}
	orig := agent.Tuple{Src: server, Dst: snat, SrcPort: 20, DstPort: 30001, Proto: 6}
	reply := agent.Tuple{Src: client, Dst: vip, SrcPort: 6000, DstPort: 20, Proto: 6}
	if k, ok := a.KeyOf(orig, reply); !ok || k != (signal.Key{Src: client, SrcPort: 6000, Dst: vip, DstPort: 20, Proto: 6}) {
		t.Errorf("KeyOf: %+v %v", k, ok)
	}
	if k, ok := a.InboundOf(orig, reply); !ok || k != (signal.Key{Src: server, SrcPort: 20, Dst: snat, DstPort: 30001, Proto: 6}) {
		t.Errorf("InboundOf: %+v %v", k, ok)
	}
	// A server-side connection the TM opens has no inbound key.
	if k, ok := a.InboundOf(agent.Tuple{Src: snat, Dst: server, SrcPort: 30002, DstPort: 21, Proto: 6},
		agent.Tuple{Src: server, Dst: snat, SrcPort: 21, DstPort: 30002, Proto: 6}); ok {
		t.Errorf("InboundOf of an outgoing connection: %+v", k)
	}
}

// FuzzDecodeRequest: any input either decodes into 1..MaxBatch ops that
// encode as signal messages, or is refused with a RequestError; nothing
// panics.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		goodMemorize, `{"op":"stats"}`,
		`{"op":"forget","key":{"src":"[fd00::1]:1","dst":"[fd00:100::100]:80","proto":"udp","vlan":7}}`,
		`{"op":"age","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"17"},"timeout":0}`,
		`{"op":"relate","parent":{"src":"1.2.3.4:1","dst":"10.0.0.100:21","proto":"tcp"},"second":{"src":"1.2.3.4:0","dst":"10.0.0.100:5000","proto":"tcp"},"mask":["proto","src","dst","dport"],"timeout":60}`,
		`{"op":"batch","ops":[` + goodMemorize + `,{"op":"mirror","key":{"src":"1.2.3.4:1","dst":"10.0.0.100:80","proto":"tcp"}}]}`,
		`{"op":"memorize","key":{"src":"0.0.0.0:1","dst":"10.0.0.100:80","proto":"tcp"}}`,
		`{"op":"memorize","key":{"src":"[::ffff:1.2.3.4]:1","dst":"10.0.0.100:80","proto":"tcp"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, stats, err := agent.DecodeRequest(b)
		if err != nil {
			if _, ok := err.(*agent.RequestError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if ops != nil || stats {
				t.Fatal("ops or stats with an error")
			}
			return
		}
		if stats {
			if ops != nil {
				t.Fatal("stats with ops")
			}
			return
		}
		if len(ops) < 1 || len(ops) > agent.MaxBatch {
			t.Fatalf("%d ops", len(ops))
		}
		for len(ops) > 0 {
			n := min(len(ops), signal.MaxOps)
			if _, err := (signal.Message{Ops: ops[:n]}).Marshal(); err != nil {
				t.Fatalf("accepted ops do not encode: %v", err)
			}
			ops = ops[n:]
		}
	})
}

// TestServeStats: the stats listener answers stats and refuses every other
// request (no signal op goes out from it), on the same connection.
func TestServeStats(t *testing.T) {
	sink, snd := newSink(t)
	a, err := agent.New(testConfig(), snd)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.ServeStats(ctx, l); close(done) }()
	go a.Send(ctx)
	defer func() { cancel(); <-done }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(line string) agent.APIReply {
		t.Helper()
		if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
			t.Fatal(err)
		}
		reply, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var rep agent.APIReply
		if err := json.Unmarshal(reply, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := ask(`{"op":"stats"}`); !rep.OK || rep.Stats == nil {
		t.Fatalf("stats: %+v", rep)
	}
	if rep := ask(goodMemorize); rep.OK || !strings.Contains(rep.Error, "stats only") {
		t.Fatalf("memorize on the stats listener: %+v", rep)
	}
	if rep := ask(`{"op":"stats"}`); !rep.OK || rep.Stats.APIErrors != 1 || rep.Stats.APIOps != 0 {
		t.Fatalf("stats after a refused op: %+v", rep.Stats)
	}
	if n := len(sink.msgs); n != 0 {
		t.Fatalf("%d signals went out from the stats listener", n)
	}
}
