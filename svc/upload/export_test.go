package upload

import "github.com/tus/tusd/v2/pkg/handler"

// ParseUploadChecksum exposes the Upload-Checksum parser to the fuzz test.
func ParseUploadChecksum(v string) (string, []byte, error) { return parseUploadChecksum(v) }

// TusMetadata exposes the Upload-Metadata check to the fuzz test.
func TusMetadata(m map[string]string) (title string, kept map[string]string, err error) {
	meta, k, err := tusMetadata(handler.MetaData(m))
	return meta.GetTitle(), k, err
}
