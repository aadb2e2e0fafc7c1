package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/reelway/reelway/gateway"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
)

// webText turns connect-go's binary gRPC-Web client into a gRPC-Web text client, as
// browsers' grpc-web "grpcwebtext" mode: the request body goes out as base64, and the
// response's base64 is decoded as it arrives, padded chunk after padded chunk.
type webText struct{ base http.RoundTripper }

func (t webText) RoundTrip(req *http.Request) (*http.Response, error) {
	ct := req.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/grpc-web") {
		return t.base.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	out.Header.Set("Content-Type", "application/grpc-web-text"+strings.TrimPrefix(ct, "application/grpc-web"))
	out.Header.Set("Accept", "application/grpc-web-text")
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		enc := base64.StdEncoding.EncodeToString(b)
		out.Body, out.GetBody, out.ContentLength = io.NopCloser(strings.NewReader(enc)), nil, int64(len(enc))
	}
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	rct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(rct, "application/grpc-web-text") {
		return nil, errors.New("gRPC-Web text call answered with content type " + rct)
	}
	resp.Header.Set("Content-Type", "application/grpc-web"+strings.TrimPrefix(rct, "application/grpc-web-text"))
	resp.Body, resp.ContentLength = &textDecoder{rc: resp.Body}, -1
	return resp, nil
}

// textDecoder decodes base64 4 characters at a time as they arrive, so padding in the
// middle (one padded chunk per flush) is fine and nothing waits for the end of the body.
type textDecoder struct {
	rc       io.ReadCloser
	pending  []byte
	out      []byte
	raw      [4096]byte
	finished error
}

func (d *textDecoder) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.finished != nil {
			return 0, d.finished
		}
		n, err := d.rc.Read(d.raw[:])
		d.pending = append(d.pending, d.raw[:n]...)
		k := len(d.pending) / 4 * 4
		for i := 0; i < k; i += 4 {
			var dec [3]byte
			m, derr := base64.StdEncoding.Decode(dec[:], d.pending[i:i+4])
			if derr != nil {
				return 0, derr
			}
			d.out = append(d.out, dec[:m]...)
		}
		d.pending = append(d.pending[:0], d.pending[k:]...)
		if err != nil {
			if errors.Is(err, io.EOF) && len(d.pending) > 0 {
				err = io.ErrUnexpectedEOF
			}
			d.finished = err
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

func (d *textDecoder) Close() error { return d.rc.Close() }

// TestGRPCWebTextRequests sends gRPC-Web text bodies by hand: padded chunks one after
// another and line breaks are decoded; a body that is not base64 gets invalid_argument in
// the caller's protocol (a trailers-only answer labelled gRPC-Web text) from the gateway
// itself, and the breaker does not count it.
func TestGRPCWebTextRequests(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	frame := []byte{0, 0, 0, 0, 3, 0x0a, 0x01, 'k'} // GetRequest{key: "k"}
	chunked := base64.StdEncoding.EncodeToString(frame[:4]) + "\r\n" + base64.StdEncoding.EncodeToString(frame[4:])
	tests := []struct {
		name, body string
		status     string // grpc-status in the headers (trailers-only), "" for a message
	}{
		{"padded chunks", chunked, ""},
		{"one string", base64.StdEncoding.EncodeToString(frame), ""},
		{"not base64", "!!!!!!!!", "3"},
		{"cut short", base64.StdEncoding.EncodeToString(frame)[:5], "3"},
	}
	for range 3 { // more caller errors than the breaker's threshold
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, f.gateway+"/reelway.cache.v1.CacheService/Get", strings.NewReader(tt.body))
				req.Header.Set("Content-Type", "application/grpc-web-text+proto")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/grpc-web-text+proto" {
					t.Fatalf("answer %d %q, want 200 application/grpc-web-text+proto", resp.StatusCode, ct)
				}
				body, err := io.ReadAll(&textDecoder{rc: resp.Body})
				if err != nil {
					t.Fatalf("body is not gRPC-Web text: %v", err)
				}
				if tt.status != "" {
					if got := resp.Header.Get("Grpc-Status"); got != tt.status || len(body) != 0 {
						t.Fatalf("grpc-status %q with %d body bytes, want %s trailers-only (%s)", got, len(body), tt.status, resp.Header.Get("Grpc-Message"))
					}
					return
				}
				// A message frame (found: true, value: "k"), then the trailer frame.
				want := "\x00\x00\x00\x00\x05\x08\x01\x12\x01k" + "\x80\x00\x00\x00\x10grpc-status: 0\r\n"
				if string(body) != want {
					t.Fatalf("body %q, want %q", body, want)
				}
			})
		}
	}
	if v := metric(metrics(t, f.gateway), `reelway_gateway_breaker_state{instance="`+f.instances[0].id+`"}`); v != "0" {
		t.Fatalf("breaker state %q after malformed text bodies, want 0 (closed)", v)
	}
}

// FuzzDecodeText checks that any body decodes or fails without panicking, and that base64
// cut into padded chunks anywhere decodes to the bytes encoded.
func FuzzDecodeText(f *testing.F) {
	f.Add([]byte("hello, world"), uint8(3), "AAAA")
	f.Add([]byte{0, 0, 0, 0, 3, 10, 1, 'k'}, uint8(4), "A=A=")
	f.Fuzz(func(t *testing.T, data []byte, cut uint8, junk string) {
		_, _ = gateway.DecodeText([]byte(junk))
		k := int(cut) % (len(data) + 1)
		enc := base64.StdEncoding.EncodeToString(data[:k]) + base64.StdEncoding.EncodeToString(data[k:])
		got, err := gateway.DecodeText([]byte(enc))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("DecodeText(%q) = %q, %v; want %q", enc, got, err, data)
		}
	})
}

// withCharset adds a charset parameter to every request's content type.
type withCharset struct{ base http.RoundTripper }

func (t withCharset) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.Header.Set("Content-Type", req.Header.Get("Content-Type")+"; charset=utf-8")
	return t.base.RoundTrip(out)
}

// TestGatewayGRPCContentTypeParameters sends gRPC and gRPC-Web calls whose content type
// carries a parameter. The services' handlers refuse any parameter on these types with a
// bodyless 415 the caller's gRPC client cannot read; the gateway forwards the bare type.
func TestGatewayGRPCContentTypeParameters(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	for _, p := range protocols() {
		if !strings.HasPrefix(p.name, "grpc") {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			base := p.client.Transport
			if base == nil {
				base = http.DefaultTransport
			}
			c := cachev1connect.NewCacheServiceClient(&http.Client{Transport: withCharset{base}}, f.gateway, p.opts...)
			if _, err := c.Set(context.Background(), &cachev1.SetRequest{Key: "k", Value: []byte("v")}); err != nil {
				t.Fatalf("Set with a charset parameter: %v", err)
			}
		})
	}
}
