package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestGatewayCallerFaultsAgainstDev checks, against the real services, the gateway's own
// answers to callers that send what no service takes (a unary body that stalls, paths
// with empty segments, content types and encodings of no RPC protocol), and that calls are
// counted under the code the caller got (SignUp's already_exists, not the aborted its
// HTTP status 409 would suggest).
func TestGatewayCallerFaultsAgainstDev(t *testing.T) {
	p := startDev(t)
	const getVideo = "/reelway.metadata.v1.MetadataService/GetVideo"

	t.Run("stalled unary body over HTTP/1.1", func(t *testing.T) {
		start := time.Now()
		resp, body, closed := rawHTTP1(t, p.gateway, "POST "+getVideo+" HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/json\r\nConnect-Timeout-Ms: 500\r\nContent-Length: 100\r\n\r\n{")
		elapsed := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Content-Type") != "application/json" ||
			!strings.Contains(string(body), `"deadline_exceeded"`) {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}
		if !closed || elapsed > 10*time.Second {
			t.Errorf("answered in %v (deadline 500 ms), connection closed %v", elapsed, closed)
		}
	})

	t.Run("stalled unary body over h2c", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pr, pw := io.Pipe()
		defer pw.Close() // never closed before: the client stalls
		go func() { _, _ = pw.Write([]byte("{")) }()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.gateway+getVideo, pr)
		must(t, err, "new request")
		req.ContentLength = 100
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Timeout-Ms", "500")
		resp, err := h2cClient().Do(req)
		must(t, err, "stalled call")
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), `"deadline_exceeded"`) {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})

	t.Run("empty segments are a plain 400", func(t *testing.T) {
		for _, req := range []string{
			"GET /v1/hls/abc//master.m3u8",
			"GET //v1/hls/abc/master.m3u8",
			"POST /v1//uploads?title=x",
			"POST /reelway.metadata.v1.MetadataService//GetVideo",
		} {
			resp, body, _ := rawHTTP1(t, p.gateway, req+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
				"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" ||
				resp.Header.Get("Content-Type") != "application/json" || strings.Contains(string(body), "<") {
				t.Errorf("%s: %d %v %q", req, resp.StatusCode, resp.Header, body)
			}
		}
	})

	t.Run("unsupported content types get the gateway's 415", func(t *testing.T) {
		for _, tt := range []struct{ method, query, ctype string }{
			{http.MethodPost, "", "application/xml"},
			{http.MethodPost, "", "application/x-www-form-urlencoded"},
			{http.MethodGet, "?encoding=xml&message=x", ""},
		} {
			req, err := http.NewRequest(tt.method, p.gateway+getVideo+tt.query, strings.NewReader(`{"id":"x"}`))
			must(t, err, "new request")
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			must(t, err, "%s %s", tt.method, tt.ctype)
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("Content-Type") != "application/json" ||
				!strings.Contains(string(body), "unsupported") || !strings.Contains(string(body), "json") {
				t.Errorf("%s %q %q: %d %q", tt.method, tt.query, tt.ctype, resp.StatusCode, body)
			}
		}
	})

	t.Run("already_exists is counted as such", func(t *testing.T) {
		email := fmt.Sprintf("review-%d@example.com", time.Now().UnixNano())
		signUp := map[string]any{"email": email, "password": "correct horse battery"}
		if status, out := connectJSON(t, p.gateway, "/reelway.auth.v1.AuthService/SignUp", signUp); status != http.StatusOK {
			t.Fatalf("sign up: %d %v", status, out)
		}
		status, out := connectJSON(t, p.gateway, "/reelway.auth.v1.AuthService/SignUp", signUp)
		if status != http.StatusConflict || out["code"] != "already_exists" {
			t.Fatalf("second sign up: %d %v", status, out)
		}
		_, metrics := p.get(t, "/metrics")
		const series = `reelway_gateway_requests_total{code="%s",route="/reelway.auth.v1.AuthService/SignUp"}`
		if !strings.Contains(string(metrics), fmt.Sprintf(series, "already_exists")+" 1") ||
			strings.Contains(string(metrics), fmt.Sprintf(series, "aborted")) {
			t.Errorf("SignUp series:\n%s", grepLines(string(metrics), "AuthService/SignUp"))
		}
	})
}
