// Command protodeps writes the .proto sources Reelway's schemas import but does not own
// (buf/validate/validate.proto) into a folder buf reads. The source is printed back from the
// file descriptor registered by the protovalidate Go module, so generation works offline and
// nothing fetched from outside is committed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate" // registers validate.proto
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoprint"
	"google.golang.org/protobuf/reflect/protoregistry"
)

func main() {
	out := flag.String("out", ".buf-deps", "folder to write the imported .proto files into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "protodeps:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	const name = "buf/validate/validate.proto"
	fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	d, err := desc.WrapFile(fd)
	if err != nil {
		return fmt.Errorf("wrap %s: %w", name, err)
	}
	path := filepath.Join(out, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("make folder: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	p := protoprint.Printer{}
	if err := p.PrintProtoFile(d, f); err != nil {
		return errors.Join(fmt.Errorf("print %s: %w", name, err), f.Close())
	}
	return f.Close()
}
