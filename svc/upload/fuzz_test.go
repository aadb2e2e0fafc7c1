package upload_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"maps"
	"testing"
	"unicode/utf8"

	"github.com/reelway/reelway/svc/upload"
	"github.com/tus/tusd/v2/pkg/handler"
)

// FuzzUploadChecksum: any Upload-Checksum header is either refused with a reason that maps
// to 400 or yields a supported algorithm and a digest of its size, which formats back to
// the same parse.
func FuzzUploadChecksum(f *testing.F) {
	for _, seed := range []string{
		"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
		"sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"md5 1B2M2Y8AsgTpgAmY7PhCfg==",
		"SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
		"crc32 AAAAAA==", "sha1", "sha1 ", " sha1 x", "sha1 ***", "sha1  Kq5sNclPz7QV2+lfQIuc6R7oRu0=", "",
	} {
		f.Add(seed)
	}
	sizes := map[string]int{"sha1": 20, "sha256": 32, "md5": 16}
	f.Fuzz(func(t *testing.T, header string) {
		algo, digest, err := upload.ParseUploadChecksum(header)
		if err != nil {
			if !errors.Is(err, upload.ErrInvalid) && !errors.Is(err, upload.ErrChecksumAlgorithm) {
				t.Fatalf("%q: error %v is neither invalid nor an unsupported algorithm", header, err)
			}
			if !utf8.ValidString(err.Error()) && utf8.ValidString(header) {
				t.Fatalf("%q: reason %q is not UTF-8", header, err)
			}
			return
		}
		if n, ok := sizes[algo]; !ok || len(digest) != n {
			t.Fatalf("%q: algorithm %q with a %d-byte digest", header, algo, len(digest))
		}
		algo2, digest2, err := upload.ParseUploadChecksum(algo + " " + base64.StdEncoding.EncodeToString(digest))
		if err != nil || algo2 != algo || !bytes.Equal(digest2, digest) {
			t.Fatalf("%q: reformatted parse = %q %x %v", header, algo2, digest2, err)
		}
	})
}

// FuzzUploadMetadata: any Upload-Metadata header, as tusd parses it, is either refused as
// invalid or yields a title and only the known keys (visibility in its lower-case spelling),
// all UTF-8 text within their limits,
// which survive a round trip through the header format (HEAD answers).
func FuzzUploadMetadata(f *testing.F) {
	for _, seed := range []string{
		"title aGVsbG8=,filename Y2xpcC5tcDQ=",
		"title 5pel5pys6Kqe,filename Li4vLi4vZXRjL3Bhc3N3ZA==",
		"title", "title ,filename x", "filename Y2xpcC5tcDQ=", "title //79", "name YS5tcDQ=,title YQ==",
		"title YQ==,title Yg==", "title YQ== junk", "", ",,,",
		"title YQ==,visibility cHJpdmF0ZQ==", "title YQ==,visibility VW5MaXN0ZWQ=", "title YQ==,visibility c2VjcmV0", "title YQ==,visibility", "title YQ==,description " + base64.StdEncoding.EncodeToString(make([]byte, 6000)),
	} {
		f.Add(seed)
	}
	allowed := map[string]int{"title": 200, "filename": 255, "description": 5000, "filetype": 255, "visibility": len("unlisted")}
	f.Fuzz(func(t *testing.T, header string) {
		title, kept, err := upload.TusMetadata(handler.ParseMetadataHeader(header))
		if err != nil {
			if !errors.Is(err, upload.ErrInvalid) {
				t.Fatalf("%q: error %v is not invalid argument", header, err)
			}
			return
		}
		if title == "" || kept["title"] != title {
			t.Fatalf("%q: accepted with title %q, kept %q", header, title, kept)
		}
		if v, ok := kept["visibility"]; ok && v != "public" && v != "unlisted" && v != "private" {
			t.Fatalf("%q: kept visibility %q", header, v)
		}
		for k, v := range kept {
			limit, ok := allowed[k]
			if !ok {
				t.Fatalf("%q: kept unknown key %q", header, k)
			}
			if v == "" || !utf8.ValidString(v) || utf8.RuneCountInString(v) > limit {
				t.Fatalf("%q: kept %s = %q", header, k, v)
			}
		}
		back := handler.ParseMetadataHeader(handler.SerializeMetadataHeader(kept))
		if !maps.Equal(back, kept) {
			t.Fatalf("%q: round trip %q → %q", header, kept, back)
		}
	})
}
