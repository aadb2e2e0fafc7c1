package gateway

import (
	"net/http"
	"slices"
	"strings"

	connectcors "connectrpc.com/cors"
	"github.com/rs/cors"
)

// newCORS returns the browser policy: the methods and headers Connect, gRPC-Web and their
// timeouts need, statuses and trailers readable by scripts, and origins limited to the
// configured list plus the gateway's own ("*" in the list allows any).
func newCORS(origins []string) *cors.Cors {
	any := slices.Contains(origins, "*")
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[strings.TrimRight(strings.ToLower(o), "/")] = true
	}
	return cors.New(cors.Options{
		AllowOriginVaryRequestFunc: func(r *http.Request, origin string) (bool, []string) {
			o := strings.ToLower(origin)
			if any || allowed[o] {
				return true, nil
			}
			// Same origin: the page was served through this gateway's own host.
			return o == "http://"+strings.ToLower(r.Host) || o == "https://"+strings.ToLower(r.Host), nil
		},
		// PATCH and DELETE are tus's (resumable uploads under /v1/uploads/tus/).
		AllowedMethods: append(connectcors.AllowedMethods(), http.MethodHead, http.MethodPatch, http.MethodDelete),
		AllowedHeaders: append(connectcors.AllowedHeaders(),
			"Connect-Content-Encoding", "Connect-Accept-Encoding",
			"Grpc-Encoding", "Grpc-Accept-Encoding",
			"Authorization", "X-Request-Id", "Range",
			"Tus-Resumable", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
			"Upload-Offset", "Upload-Checksum", "Upload-Concat"),
		ExposedHeaders: append(connectcors.ExposedHeaders(),
			"Connect-Content-Encoding", "Connect-Accept-Encoding",
			"Grpc-Encoding", "Grpc-Accept-Encoding",
			"X-Request-Id", "Content-Range", "Accept-Ranges", "Content-Length",
			"Location", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
			"Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Metadata"),
		MaxAge: 7200,
	})
}
