package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// Limits of the local API.
const (
	// MaxRequest is the longest request line, newline included.
	MaxRequest = 64 << 10
	// MaxBatch is the most ops one request may carry; they are sent in
	// messages of up to signal.MaxOps.
	MaxBatch = 64
	// MaxConns is the most API connections served at once; more wait in
	// the listen backlog.
	MaxConns = 64
	// idleTimeout closes a connection that sends nothing for this long;
	// writeTimeout gives up on a client that does not read its replies.
	idleTimeout  = 5 * time.Minute
	writeTimeout = 5 * time.Second
)

// APIKey is a flow key in an API request. Src and Dst are "ADDR:PORT"
// ("[ADDR]:PORT" for IPv6); a RELATE second key wildcards an address with
// 0.0.0.0 or :: and a port with 0.
type APIKey struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Proto string `json:"proto"`
	VLAN  uint16 `json:"vlan,omitempty"`
}

// APIRequest is one request line. Op is memorize, forget, mirror, age,
// relate, batch or stats.
type APIRequest struct {
	Op string `json:"op"`
	// Key: memorize, forget, mirror, age.
	Key *APIKey `json:"key,omitempty"`
	// Parent, Second, Mask: relate. Mask lists fields: vlan, proto, src,
	// dst, sport, dport.
	Parent *APIKey  `json:"parent,omitempty"`
	Second *APIKey  `json:"second,omitempty"`
	Mask   []string `json:"mask,omitempty"`
	// Timeout in seconds: memorize (0: the protocol's default), age (0:
	// expire now), relate (0: the default).
	Timeout *uint32 `json:"timeout,omitempty"`
	// Mirror: memorize with the MIRROR flag.
	Mirror bool `json:"mirror,omitempty"`
	// Ops: batch, 1..MaxBatch single-op requests.
	Ops []APIRequest `json:"ops,omitempty"`
}

// APIReply is the answer to one request line.
type APIReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Ops is the number of ops sent.
	Ops   int    `json:"ops,omitempty"`
	Stats *Stats `json:"stats,omitempty"`
}

// RequestError is a request the API refuses, with what is wrong and where.
type RequestError struct {
	Where string // e.g. "ops[3].key.src"
	Msg   string
}

func (e *RequestError) Error() string {
	if e.Where == "" {
		return e.Msg
	}
	return e.Where + ": " + e.Msg
}

func reqErr(where, format string, args ...any) error {
	return &RequestError{Where: where, Msg: fmt.Sprintf(format, args...)}
}

// DecodeRequest decodes and checks one request line (without its
// newline). It returns the ops to send, or stats == true for a stats
// request. Every op is checked against the wire format, so what it returns
// always encodes.
func DecodeRequest(line []byte) (ops []signal.Op, stats bool, err error) {
	if len(line) > MaxRequest {
		return nil, false, reqErr("", "request of %d bytes, over the limit of %d", len(line), MaxRequest)
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	var r APIRequest
	if err := d.Decode(&r); err != nil {
		return nil, false, reqErr("", "not a JSON request object: %v", err)
	}
	if d.More() {
		return nil, false, reqErr("", "trailing data after the request object")
	}
	switch r.Op {
	case "stats":
		if r.Key != nil || r.Parent != nil || r.Second != nil || r.Ops != nil || r.Mask != nil || r.Timeout != nil || r.Mirror {
			return nil, false, reqErr("", "stats takes no other fields")
		}
		return nil, true, nil
	case "batch":
		if r.Key != nil || r.Parent != nil || r.Second != nil || r.Mask != nil || r.Timeout != nil || r.Mirror {
			return nil, false, reqErr("", "batch takes only ops")
		}
		if len(r.Ops) == 0 || len(r.Ops) > MaxBatch {
			return nil, false, reqErr("ops", "a batch holds 1 to %d ops, not %d", MaxBatch, len(r.Ops))
		}
		ops = make([]signal.Op, 0, len(r.Ops))
		for i := range r.Ops {
			op, err := decodeOp(&r.Ops[i], fmt.Sprintf("ops[%d]", i))
			if err != nil {
				return nil, false, err
			}
			ops = append(ops, op)
		}
		return ops, false, nil
	}
	op, err := decodeOp(&r, "")
	if err != nil {
		return nil, false, err
	}
	return []signal.Op{op}, false, nil
}

func field(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func decodeOp(r *APIRequest, at string) (signal.Op, error) {
	if r.Op == "batch" || r.Op == "stats" {
		return nil, reqErr(field(at, "op"), "%s cannot be inside a batch", r.Op)
	}
	if r.Ops != nil {
		return nil, reqErr(field(at, "ops"), "only a batch has ops")
	}
	needKey := func() (signal.Key, error) {
		if r.Parent != nil || r.Second != nil || r.Mask != nil {
			return signal.Key{}, reqErr(at, "%s takes key, not parent/second/mask", r.Op)
		}
		if r.Key == nil {
			return signal.Key{}, reqErr(field(at, "key"), "missing")
		}
		return decodeKey(r.Key, field(at, "key"), false)
	}
	var op signal.Op
	switch r.Op {
	case "memorize":
		k, err := needKey()
		if err != nil {
			return nil, err
		}
		m := signal.Memorize{Key: k, Mirror: r.Mirror}
		if r.Timeout != nil {
			if *r.Timeout > 65535 {
				return nil, reqErr(field(at, "timeout"), "%d s is over the MEMORIZE limit of 65535 s", *r.Timeout)
			}
			m.Timeout = time.Duration(*r.Timeout) * time.Second
		}
		op = m
	case "forget", "mirror":
		k, err := needKey()
		if err != nil {
			return nil, err
		}
		if r.Timeout != nil || r.Mirror {
			return nil, reqErr(at, "%s takes only a key", r.Op)
		}
		if r.Op == "forget" {
			op = signal.Forget{Key: k}
		} else {
			op = signal.Mirror{Key: k}
		}
	case "age":
		k, err := needKey()
		if err != nil {
			return nil, err
		}
		if r.Mirror {
			return nil, reqErr(at, "age takes no mirror")
		}
		if r.Timeout == nil {
			return nil, reqErr(field(at, "timeout"), "missing (0 expires the entry now)")
		}
		op = signal.Age{Key: k, Timeout: time.Duration(*r.Timeout) * time.Second}
	case "relate":
		if r.Key != nil || r.Mirror {
			return nil, reqErr(at, "relate takes parent, second, mask and timeout")
		}
		if r.Parent == nil || r.Second == nil {
			return nil, reqErr(at, "relate needs parent and second")
		}
		p, err := decodeKey(r.Parent, field(at, "parent"), false)
		if err != nil {
			return nil, err
		}
		s, err := decodeKey(r.Second, field(at, "second"), true)
		if err != nil {
			return nil, err
		}
		mask, err := decodeMask(r.Mask, field(at, "mask"))
		if err != nil {
			return nil, err
		}
		rel := signal.Relate{Parent: p, Second: s, Mask: mask}
		if r.Timeout != nil {
			rel.Timeout = time.Duration(*r.Timeout) * time.Second
		}
		op = rel
	case "":
		return nil, reqErr(field(at, "op"), "missing")
	default:
		return nil, reqErr(field(at, "op"), "unknown op %q (want memorize, forget, mirror, age, relate, batch or stats)", r.Op)
	}
	// The library is the judge of what encodes (timeouts, families).
	if _, err := (signal.Message{Ops: []signal.Op{op}}).Marshal(); err != nil {
		return nil, reqErr(at, "%v", err)
	}
	return op, nil
}

func decodeKey(k *APIKey, at string, wildcard bool) (signal.Key, error) {
	var out signal.Key
	src, err := netip.ParseAddrPort(k.Src)
	if err != nil {
		return out, reqErr(field(at, "src"), "want ADDR:PORT ([ADDR]:PORT for IPv6), got %q", k.Src)
	}
	dst, err := netip.ParseAddrPort(k.Dst)
	if err != nil {
		return out, reqErr(field(at, "dst"), "want ADDR:PORT ([ADDR]:PORT for IPv6), got %q", k.Dst)
	}
	if src.Addr().Zone() != "" || dst.Addr().Zone() != "" {
		return out, reqErr(at, "addresses with a zone are not flow keys")
	}
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() != d.Is4() {
		return out, reqErr(at, "src and dst of different families")
	}
	if !wildcard && (s.IsUnspecified() || d.IsUnspecified()) {
		return out, reqErr(at, "an unspecified address is only a wildcard in a relate's second key")
	}
	var proto uint8
	switch strings.ToLower(k.Proto) {
	case "tcp":
		proto = 6
	case "udp":
		proto = 17
	default:
		n, err := strconv.ParseUint(k.Proto, 10, 8)
		if err != nil {
			return out, reqErr(field(at, "proto"), "want tcp, udp or a protocol number 0..255, got %q", k.Proto)
		}
		proto = uint8(n)
	}
	if k.VLAN > 4095 {
		return out, reqErr(field(at, "vlan"), "%d is not a VLAN id (0..4095)", k.VLAN)
	}
	return signal.Key{Src: s, Dst: d, SrcPort: src.Port(), DstPort: dst.Port(), Proto: proto, VLAN: k.VLAN}, nil
}

var maskFields = map[string]signal.Field{
	"vlan": signal.FieldVLAN, "proto": signal.FieldProto, "src": signal.FieldSrc,
	"dst": signal.FieldDst, "sport": signal.FieldSrcPort, "dport": signal.FieldDstPort,
}

func decodeMask(names []string, at string) (signal.Field, error) {
	if len(names) == 0 {
		return 0, reqErr(at, "missing: a list of fields from vlan, proto, src, dst, sport, dport")
	}
	var m signal.Field
	for _, n := range names {
		f, ok := maskFields[n]
		if !ok {
			return 0, reqErr(at, "unknown field %q (want vlan, proto, src, dst, sport, dport)", n)
		}
		if m&f != 0 {
			return 0, reqErr(at, "field %q twice", n)
		}
		m |= f
	}
	return m, nil
}

// Listen opens the API's unix socket at path, replacing a stale socket
// file (but refusing to replace anything that is not a socket).
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("agent API %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("agent API %s: another agent is serving it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("agent API %s: remove stale socket: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent API: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("agent API %s: %w", path, err)
	}
	return l, nil
}

// Serve answers API requests on l until ctx ends; it closes l.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	return a.serve(ctx, l, a.answer)
}

// ServeStats answers only stats requests on l until ctx ends (it closes
// l): the read-only load report a distributor polls for the ratio-dynamic
// policy, safe to expose on the TM's network where the full API (signal
// ops) is not.
func (a *Agent) ServeStats(ctx context.Context, l net.Listener) error {
	return a.serve(ctx, l, a.answerStats)
}

// answerStats answers a stats request and refuses every other.
func (a *Agent) answerStats(line []byte) APIReply {
	if _, stats, err := DecodeRequest(line); err != nil || !stats {
		a.apiErrs.Add(1)
		return APIReply{Error: "this listener answers stats only"}
	}
	s := a.Stats()
	return APIReply{OK: true, Stats: &s}
}

func (a *Agent) serve(ctx context.Context, l net.Listener, answer func([]byte) APIReply) error {
	var wg sync.WaitGroup
	slots := make(chan struct{}, MaxConns)
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	go func() {
		<-ctx.Done()
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := l.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("agent API: accept: %w", err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveConn(c, answer)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
			<-slots
		}()
	}
}

// serveConn answers one connection's request lines in order. An oversized
// line is refused and skipped up to its newline; the connection goes on.
func (a *Agent) serveConn(c net.Conn, answer func([]byte) APIReply) {
	br := bufio.NewReaderSize(c, 4096)
	enc := json.NewEncoder(c)
	line := make([]byte, 0, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		line = line[:0]
		over := false
		for {
			chunk, err := br.ReadSlice('\n')
			if !over {
				if len(line)+len(chunk) > MaxRequest {
					over = true
					line = line[:0]
				} else {
					line = append(line, chunk...)
				}
			}
			if err == nil {
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != io.EOF || (len(line) == 0 && !over) {
				return
			}
			break // a last line without a newline
		}
		var rep APIReply
		if over {
			a.apiErrs.Add(1)
			rep.Error = fmt.Sprintf("request over the limit of %d bytes (newline included); skipped", MaxRequest)
		} else {
			rep = answer(bytes.TrimRight(line, "\r\n"))
		}
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := enc.Encode(&rep); err != nil {
			return
		}
	}
}

func (a *Agent) answer(line []byte) APIReply {
	if len(bytes.TrimSpace(line)) == 0 {
		a.apiErrs.Add(1)
		return APIReply{Error: "empty request"}
	}
	ops, stats, err := DecodeRequest(line)
	if err != nil {
		a.apiErrs.Add(1)
		return APIReply{Error: err.Error()}
	}
	if stats {
		s := a.Stats()
		return APIReply{OK: true, Stats: &s}
	}
	if err := a.sendOps(ops); err != nil {
		a.apiErrs.Add(1)
		return APIReply{Error: fmt.Sprintf("send to the distributor: %v", err)}
	}
	a.apiOps.Add(uint64(len(ops)))
	return APIReply{OK: true, Ops: len(ops)}
}

// Client talks to an agent's API socket; it is not safe for concurrent use.
type Client struct {
	c   net.Conn
	br  *bufio.Reader
	enc *json.Encoder
}

// Dial connects to the agent API at path.
func Dial(path string) (*Client, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent API: %w", err)
	}
	return &Client{c: c, br: bufio.NewReaderSize(c, maxReply), enc: json.NewEncoder(c)}, nil
}

// Do sends one request and returns the reply; a refused request is an
// error with the agent's reason.
func (c *Client) Do(r APIRequest) (APIReply, error) {
	if err := c.enc.Encode(&r); err != nil {
		return APIReply{}, fmt.Errorf("agent API: send: %w", err)
	}
	return c.reply()
}

// DoRaw sends a raw request line (a newline is added) and returns the reply.
func (c *Client) DoRaw(line []byte) (APIReply, error) {
	if _, err := c.c.Write(append(append([]byte(nil), line...), '\n')); err != nil {
		return APIReply{}, fmt.Errorf("agent API: send: %w", err)
	}
	return c.reply()
}

// maxReply bounds a reply line the client reads (stats with every counter
// fit in a few KiB).
const maxReply = 1 << 20

func (c *Client) reply() (APIReply, error) {
	var rep APIReply
	// ReadSlice ends at the buffer's size: a reply is bounded by maxReply.
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return rep, fmt.Errorf("agent API: read reply: %w", err)
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return rep, fmt.Errorf("agent API: bad reply %q: %w", line, err)
	}
	if !rep.OK {
		return rep, fmt.Errorf("agent API: %s", rep.Error)
	}
	return rep, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }
