package loadgen

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func parse(s, method string) (*response, error) {
	return readResponse(bufio.NewReaderSize(strings.NewReader(s), 16), method)
}

func TestReadResponse(t *testing.T) {
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name    string
		in      string
		method  string
		status  int
		tm      string
		bodyLen int64
		close   bool
		err     error // errors.Is target; nil: success
	}{
		{name: "reference tm", in: "HTTP/1.1 200 OK\r\nX-Switchyard-TM: tm1\r\nContent-Length: 4\r\n\r\ntm1\n", status: 200, tm: "tm1", bodyLen: 4},
		{name: "lf only", in: "HTTP/1.1 200 OK\nx-switchyard-tm:  tm2 \nContent-Length: 4\n\ntm2\n", status: 200, tm: "tm2", bodyLen: 4},
		{name: "tm from body", in: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntm3\n", status: 200, tm: "tm3", bodyLen: 4},
		{name: "no reason phrase", in: "HTTP/1.1 204\r\nX-Switchyard-TM: a\r\n\r\n", status: 204, tm: "a"},
		{name: "interim 100", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Switchyard-TM: a\r\nContent-Length: 0\r\n\r\n", status: 200, tm: "a"},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nX-Switchyard-TM: a\r\nContent-Length: 0\r\n\r\n", status: 200, tm: "a", close: true},
		{name: "http/1.0", in: "HTTP/1.0 200 OK\r\nX-Switchyard-TM: a\r\nContent-Length: 0\r\n\r\n", status: 200, tm: "a", close: true},
		{name: "http/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nX-Switchyard-TM: a\r\nContent-Length: 0\r\n\r\n", status: 200, tm: "a"},
		{name: "read to eof", in: "HTTP/1.1 200 OK\r\n\r\ntm9\nmore", status: 200, tm: "tm9", bodyLen: 8, close: true},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\ntm\r\n2\r\n4\n\r\n0\r\nTrailer: x\r\n\r\n", status: 200, tm: "tm4", bodyLen: 4},
		{name: "head ignores length", in: "HTTP/1.1 200 OK\r\nX-Switchyard-TM: a\r\nContent-Length: 99\r\n\r\n", method: "HEAD", status: 200, tm: "a"},
		{name: "large body counted", in: "HTTP/1.1 200 OK\r\nX-Switchyard-TM: a\r\nContent-Length: 10000\r\n\r\n" + long, status: 200, tm: "a", bodyLen: 10000},
		{name: "404", in: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", status: 404},

		{name: "empty", in: "", err: io.EOF},
		{name: "truncated status", in: "HTTP/1.1 200 O", err: io.ErrUnexpectedEOF},
		{name: "truncated headers", in: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n", err: io.ErrUnexpectedEOF},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntm", err: io.ErrUnexpectedEOF},
		{name: "truncated large body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10001\r\n\r\n" + long, err: io.ErrUnexpectedEOF},
		{name: "truncated chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", err: io.ErrUnexpectedEOF},
		{name: "truncated after last chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", err: io.ErrUnexpectedEOF},
		{name: "not http", in: "SSH-2.0-OpenSSH\r\n", err: errMalformed},
		{name: "http/2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", err: errMalformed},
		{name: "bad code", in: "HTTP/1.1 2x0 OK\r\n\r\n", err: errMalformed},
		{name: "short code", in: "HTTP/1.1 20 OK\r\n\r\n", err: errMalformed},
		{name: "code below 100", in: "HTTP/1.1 099 OK\r\n\r\n", err: errMalformed},
		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\n\r\n", err: errMalformed},
		{name: "negative length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", err: errMalformed},
		{name: "conflicting lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", err: errMalformed},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nfoo\r\n\r\n", err: errMalformed},
		{name: "space in header name", in: "HTTP/1.1 200 OK\r\nfoo bar: x\r\n\r\n", err: errMalformed},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", err: errMalformed},
		{name: "chunk without crlf", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n", err: errMalformed},
		{name: "line too long", in: "HTTP/1.1 200 OK\r\nX: " + long + "\r\n\r\n", err: errMalformed},
		{name: "too many headers", in: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", 200) + "\r\n", err: errMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			r, err := parse(tc.in, method)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v (response %+v)", err, tc.err, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if r.Status != tc.status || r.TM != tc.tm || r.BodyLen != tc.bodyLen || r.Close != tc.close {
				t.Fatalf("got status %d tm %q bodyLen %d close %v, want %d %q %d %v",
					r.Status, r.TM, r.BodyLen, r.Close, tc.status, tc.tm, tc.bodyLen, tc.close)
			}
		})
	}
}

// TestReadResponsePipelined checks that back-to-back responses on one stream
// are parsed one after another, as on a keep-alive connection.
func TestReadResponsePipelined(t *testing.T) {
	one := "HTTP/1.1 200 OK\r\nX-Switchyard-TM: tm1\r\nContent-Length: 4\r\n\r\ntm1\n"
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Switchyard-TM: tm1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(one+chunked+one), 16)
	for i := range 3 {
		r, err := readResponse(br, "GET")
		if err != nil || r.TM != "tm1" {
			t.Fatalf("response %d: %+v, %v", i, r, err)
		}
	}
	if _, err := readResponse(br, "GET"); err != io.EOF {
		t.Fatalf("after the last response: %v, want io.EOF", err)
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nX-Switchyard-TM: tm1\r\nContent-Length: 4\r\n\r\ntm1\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\ntm\r\n0\r\n\r\n",
		"HTTP/1.0 100 Continue\r\n\r\nHTTP/1.1 204\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nbody to eof",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close, keep-alive\r\n\r\nabc",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readResponse(bufio.NewReaderSize(strings.NewReader(string(data)), 16), "GET")
		if err != nil {
			if r != nil {
				t.Fatalf("error %v with a response", err)
			}
			return
		}
		if r.Status < 200 || r.Status > 999 {
			t.Fatalf("status %d", r.Status)
		}
		if len(r.Body) > maxKeepBody || int64(len(r.Body)) > r.BodyLen || r.BodyLen > int64(len(data)) {
			t.Fatalf("body %d bytes kept, %d counted, %d input", len(r.Body), r.BodyLen, len(data))
		}
		// The result must not depend on how the stream is buffered.
		r2, err := readResponse(bufio.NewReaderSize(strings.NewReader(string(data)), 64<<10), "GET")
		if err != nil || r2.Status != r.Status || r2.TM != r.TM || r2.BodyLen != r.BodyLen || r2.Close != r.Close {
			t.Fatalf("small buffer: %+v; large buffer: %+v, %v", r, r2, err)
		}
	})
}
