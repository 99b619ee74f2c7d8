package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client talks to a distributor's admin API.
type Client struct {
	addr  string
	base  string
	hc    *http.Client
	token string
}

// NewClient returns a client for the API at addr ("unix:/path" or
// "host:port").
func NewClient(addr string) *Client {
	c := &Client{addr: addr, base: "http://" + addr, hc: &http.Client{}}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://switchyard"
		c.hc.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}
	}
	return c
}

// WithToken makes c send token as its bearer token (needed on a TCP
// address; see ReadTokenFile) and returns c.
func (c *Client) WithToken(token string) *Client {
	c.token = token
	return c
}

func (c *Client) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w (is the distributor running?)", c.addr, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		// Keep the server's reason (such as "BGP is not configured") next
		// to ErrNotFound, which callers test for.
		defer resp.Body.Close()
		var e struct{ Error string }
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("admin API %s %s: %s: %w", method, path, e.Error, ErrNotFound)
		}
		return nil, fmt.Errorf("admin API %s %s: %w", method, path, ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Error string }
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("admin API %s %s: %s", method, path, resp.Status)
	}
	return resp, nil
}

// ErrNotFound (wrapped) is a 404 answer: the distributor has no such
// endpoint (an older version) or no such object.
var ErrNotFound = errors.New("not found")

// GetJSON decodes the JSON answer to GET path (bounded) into v; a 404 is
// ErrNotFound. For endpoints the client has no method for yet.
func (c *Client) GetJSON(ctx context.Context, path string, v any) error {
	return c.getJSON(ctx, path, v)
}

// maxJSONAnswer bounds a JSON answer the client reads.
const maxJSONAnswer = 64 << 20

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Bounded: a status or stats answer is far below this.
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONAnswer)).Decode(v); err != nil {
		return fmt.Errorf("admin API %s: decode: %w", path, err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.getJSON(ctx, "/v1/status", &s)
}

// Stats returns the daemon's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.getJSON(ctx, "/v1/stats", &s)
}

// Reload asks the daemon to reload its config file.
func (c *Client) Reload(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodPost, "/v1/reload")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Flows streams the flow table through fn, one entry at a time.
func (c *Client) Flows(ctx context.Context, f FlowFilter, fn func(Flow) error) error {
	q := url.Values{}
	if f.Service != "" {
		q.Set("service", f.Service)
	}
	if f.TM != "" {
		q.Set("tm", f.TM)
	}
	if f.Addr.IsValid() {
		q.Set("addr", f.Addr.String())
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/flows?"+q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e struct{ Error string }
		if json.Unmarshal(line, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		var fl Flow
		if err := json.Unmarshal(line, &fl); err != nil {
			return fmt.Errorf("admin API flows: decode: %w", err)
		}
		if err := fn(fl); err != nil {
			return err
		}
	}
	return sc.Err()
}

// FollowFlows streams flow events through fn until ctx is done, fn fails or
// the daemon ends the stream.
func (c *Client) FollowFlows(ctx context.Context, fn func(FlowEvent) error) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/flows/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev FlowEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("admin API flow events: decode: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}
