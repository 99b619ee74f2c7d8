package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of the response parser: a response beyond them is an error, so that a
// broken or hostile server cannot make a worker allocate without bound.
const (
	maxLineLen   = 8 << 10 // status line or one header line
	maxHeaders   = 100     // header lines per response
	maxKeepBody  = 4 << 10 // body bytes kept in memory (the rest is counted and discarded)
	tmHeaderName = "x-switchyard-tm"
)

// response is what the load generator needs from an HTTP/1.x response.
type response struct {
	// Status is the status code.
	Status int
	// TM is the X-Switchyard-TM header, or else the first line of a short
	// body (the reference TM answers "<id>\n").
	TM string
	// BodyLen is the number of body bytes read.
	BodyLen int64
	// Body holds the first maxKeepBody bytes of the body.
	Body []byte
	// Close is true when the connection cannot carry another request: the
	// server sent "Connection: close", the version is HTTP/1.0 without
	// keep-alive, or the body was delimited by the end of the connection.
	Close bool
}

// errMalformed wraps every parse error that is the server's fault.
var errMalformed = errors.New("malformed HTTP response")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
}

// readLine reads one CRLF- or LF-terminated line without the terminator.
// io.ErrUnexpectedEOF is returned for a connection that ends mid-line.
func readLine(br *bufio.Reader) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > maxLineLen+2 {
			return "", malformed("line longer than %d bytes", maxLineLen)
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(line) == 0 {
				return "", io.EOF
			}
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
	return string(line), nil
}

// readResponse reads one response to a request with the given method from br.
// io.EOF means the connection ended cleanly before the response started
// (a keep-alive connection closed by the server); a connection that ends
// inside a response gives io.ErrUnexpectedEOF.
func readResponse(br *bufio.Reader, method string) (*response, error) {
	var r response
	var line string
	var err error
	// Skip interim 1xx responses (100 Continue, 103 Early Hints).
	for {
		line, err = readLine(br)
		if err != nil {
			return nil, err
		}
		proto, rest, ok := strings.Cut(line, " ")
		if !ok || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
			return nil, malformed("bad status line %q", trunc(line))
		}
		code, _, _ := strings.Cut(rest, " ")
		if len(code) != 3 {
			return nil, malformed("bad status code in %q", trunc(line))
		}
		r.Status, err = strconv.Atoi(code)
		if err != nil || r.Status < 100 {
			return nil, malformed("bad status code in %q", trunc(line))
		}
		r.Close = proto == "HTTP/1.0"
		hdr, err := readHeaders(br, &r)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Status == 101:
			return nil, malformed("unexpected 101 Switching Protocols")
		case r.Status >= 200:
			if err := readBody(br, &r, hdr, method); err != nil {
				return nil, err
			}
			return &r, nil
		}
		r = response{}
	}
}

// headers are the framing headers of a response.
type headers struct {
	contentLength int64 // -1: absent
	chunked       bool
}

func readHeaders(br *bufio.Reader, r *response) (headers, error) {
	h := headers{contentLength: -1}
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return h, err
		}
		if line == "" {
			return h, nil
		}
		if n >= maxHeaders {
			return h, malformed("more than %d header lines", maxHeaders)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return h, malformed("bad header line %q", trunc(line))
		}
		value = strings.Trim(value, " \t")
		switch strings.ToLower(name) {
		case "content-length":
			cl, err := strconv.ParseInt(value, 10, 64)
			if err != nil || cl < 0 || (h.contentLength >= 0 && cl != h.contentLength) {
				return h, malformed("bad Content-Length %q", trunc(value))
			}
			h.contentLength = cl
		case "transfer-encoding":
			// Only "chunked" (last) is meaningful to a client; anything else
			// has no length and is read to the end of the connection.
			codings := strings.Split(strings.ToLower(value), ",")
			h.chunked = strings.TrimSpace(codings[len(codings)-1]) == "chunked"
			if !h.chunked {
				h.contentLength = -1
				r.Close = true
			}
		case "connection":
			for _, tok := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(tok)) {
				case "close":
					r.Close = true
				case "keep-alive":
					r.Close = false
				}
			}
		case tmHeaderName:
			r.TM = value
		}
	}
}

func readBody(br *bufio.Reader, r *response, h headers, method string) error {
	switch {
	case method == "HEAD" || r.Status == 204 || r.Status == 304:
		// No body, whatever the headers say.
	case h.chunked:
		if err := readChunked(br, r); err != nil {
			return err
		}
	case h.contentLength >= 0:
		if err := readN(br, r, h.contentLength); err != nil {
			return err
		}
	default:
		// Delimited by the end of the connection.
		r.Close = true
		if err := readN(br, r, -1); err != nil {
			return err
		}
	}
	if r.TM == "" && r.BodyLen <= 256 {
		line, _, _ := bytes.Cut(r.Body, []byte{'\n'})
		r.TM = strings.TrimSpace(string(line))
	}
	return nil
}

// readN reads n body bytes (n < 0: until EOF), keeping the first maxKeepBody
// bytes of the whole body in r.Body.
func readN(br *bufio.Reader, r *response, n int64) error {
	var src io.Reader = br
	if n >= 0 {
		src = io.LimitReader(br, n)
	}
	var got int64
	defer func() { r.BodyLen += got }()
	if room := maxKeepBody - len(r.Body); room > 0 {
		if n >= 0 && int64(room) > n {
			room = int(n)
		}
		buf := make([]byte, room)
		k, err := io.ReadFull(src, buf)
		r.Body = append(r.Body, buf[:k]...)
		got += int64(k)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if n < 0 {
				return nil
			}
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	k, err := io.Copy(io.Discard, src)
	got += k
	if err != nil {
		return err
	}
	if n >= 0 && got < n {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func readChunked(br *bufio.Reader, r *response) error {
	for {
		line, err := readLine(br)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		size, _, _ := strings.Cut(line, ";")
		size = strings.TrimSpace(size)
		if size == "" || len(size) > 15 {
			return malformed("bad chunk size %q", trunc(line))
		}
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n < 0 {
			return malformed("bad chunk size %q", trunc(line))
		}
		if n == 0 {
			// Trailers, up to the empty line.
			for i := 0; ; i++ {
				line, err := readLine(br)
				if err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return err
				}
				if line == "" {
					return nil
				}
				if i >= maxHeaders {
					return malformed("more than %d trailer lines", maxHeaders)
				}
			}
		}
		if err := readN(br, r, n); err != nil {
			return err
		}
		line, err = readLine(br)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if line != "" {
			return malformed("chunk not followed by CRLF")
		}
	}
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
