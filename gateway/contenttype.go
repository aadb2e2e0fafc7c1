package gateway

import (
	"fmt"
	"net/http"
	"strings"
)

// rpcContentTypes are the media types of the RPC protocols the gateway forwards: gRPC,
// gRPC-Web (binary and text) and Connect (unary, then streaming). Parameters (a charset)
// are the backend's to judge. A function, not a package variable, so nothing can change
// it; the array does not escape, so calling it costs nothing.
func rpcContentTypes() [12]string {
	return [...]string{
		"application/grpc", "application/grpc+proto", "application/grpc+json",
		"application/grpc-web", "application/grpc-web+proto", "application/grpc-web+json",
		"application/grpc-web-text", "application/grpc-web-text+proto",
		"application/json", "application/proto",
		"application/connect+proto", "application/connect+json",
	}
}

// rpcEncodings are the Connect GET encodings (codecs) the platform's handlers take.
const rpcEncodings = "json or proto"

// supportedRPC says whether an RPC request uses a protocol and encoding the platform's
// handlers take: a POST whose content type is one of rpcContentTypes, or a Connect GET
// whose encoding query parameter, if any, is json or proto (one without lets the backend
// say what is missing). Anything else gets the gateway's own 415 instead of a backend's
// bodyless one. Only string comparisons, no allocation: it runs on every RPC.
func supportedRPC(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost:
		return rpcContentType(r.Header.Get("Content-Type"))
	case http.MethodGet:
		enc, ok := connectEncoding(r.URL.RawQuery)
		return !ok || enc == "json" || enc == "proto"
	}
	return false
}

// rpcContentType says whether a Content-Type value names an RPC protocol the gateway
// forwards. Media types are case-insensitive, so the types compare with EqualFold after a
// length check; clients send them in lower case, and then the comparisons are exact.
func rpcContentType(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	base = strings.TrimSpace(base)
	for _, t := range rpcContentTypes() {
		if len(base) == len(t) && (base == t || strings.EqualFold(base, t)) {
			return true
		}
	}
	return false
}

// connectEncoding returns the first encoding parameter of a Connect GET query, as given
// (the codec names have nothing to escape), and whether there is one.
func connectEncoding(rawQuery string) (string, bool) {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		if k, v, _ := strings.Cut(kv, "="); k == "encoding" {
			return v, true
		}
	}
	return "", false
}

// writeUnsupportedMediaType answers an RPC whose content type (or Connect GET encoding)
// no handler of the platform takes, as a Connect handler would but with a body that says
// what to send instead: 415, the accepted types in Accept-Post, and a JSON error.
func writeUnsupportedMediaType(w http.ResponseWriter, r *http.Request) {
	types := rpcContentTypes()
	accepted := strings.Join(types[:], ", ")
	var msg string
	if r.Method == http.MethodGet {
		enc, _ := connectEncoding(r.URL.RawQuery)
		msg = fmt.Sprintf("unsupported encoding %q for GET %s: use %s", enc, r.URL.Path, rpcEncodings)
	} else {
		w.Header().Set("Accept-Post", accepted)
		msg = fmt.Sprintf("unsupported content type %q for %s %s: use %s", r.Header.Get("Content-Type"), r.Method, r.URL.Path, accepted)
	}
	writePlainError(w, http.StatusUnsupportedMediaType, "invalid_argument", msg)
}

// writeStreamingType answers a streaming method called with a Connect unary content type
// (application/json, application/proto): 415 naming the types a stream takes.
func writeStreamingType(w http.ResponseWriter, r *http.Request) {
	const streaming = "application/connect+json, application/connect+proto, application/grpc, application/grpc-web"
	w.Header().Set("Accept-Post", streaming)
	what := fmt.Sprintf("content type %q is", r.Header.Get("Content-Type"))
	if r.Method == http.MethodGet {
		what = "Connect GET is"
	}
	writePlainError(w, http.StatusUnsupportedMediaType, "invalid_argument", fmt.Sprintf(
		"%s is a streaming method: %s for unary calls; POST with %s", r.URL.Path, what, streaming))
}

// bareGRPCType drops the parameters (a charset) of a gRPC or gRPC-Web content type. The
// services' handlers refuse any parameter on these types with a bodyless 415, which a
// gRPC client reports as an unknown error; the types define none, so the bare type means
// the same call. Connect's types keep theirs (a JSON charset is the handler's to judge).
func bareGRPCType(r *http.Request) {
	ct := r.Header.Get("Content-Type")
	const grpc = "application/grpc"
	if len(ct) <= len(grpc) || !strings.EqualFold(ct[:len(grpc)], grpc) || !strings.Contains(ct, ";") {
		return
	}
	base, _, _ := strings.Cut(ct, ";")
	r.Header.Set("Content-Type", strings.ToLower(strings.TrimSpace(base)))
}
