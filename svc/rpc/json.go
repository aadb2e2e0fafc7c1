package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// errNotProto reports a message that is not a protobuf message.
var errNotProto = errors.New("rpc: not a protobuf message")

// jsonCodec is Connect's JSON codec with one difference: an enum name the schema does not
// know is refused rather than dropped. connect-go decodes with DiscardUnknown, which lets
// clients send fields from a newer schema (kept here) but also turns a misspelt filter,
// {"status":"REDY"}, into no filter at all: the caller would silently get every video.
type jsonCodec struct {
	name string
}

// Name implements connect.Codec.
func (c jsonCodec) Name() string { return c.name }

// Marshal implements connect.Codec.
func (c jsonCodec) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%w: %T", errNotProto, msg)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

// MarshalAppend lets connect reuse its buffers, as its own JSON codec does.
func (c jsonCodec) MarshalAppend(dst []byte, msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%w: %T", errNotProto, msg)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

// Unmarshal implements connect.Codec. The strict decode is the common path; only a
// message it refuses is decoded again leniently, and then only an unknown field (not an
// unknown enum name) is forgiven.
func (c jsonCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("%w: %T", errNotProto, msg)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	strictErr := protojson.Unmarshal(data, m)
	if strictErr == nil {
		return nil
	}
	// protojson reports an unknown enum name as an invalid enum value; the text is the
	// only place it says so (a test pins it).
	if strings.Contains(strictErr.Error(), "invalid value for enum field") {
		return fmt.Errorf("unmarshal into %T: %w", msg, strictErr)
	}
	proto.Reset(m)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", msg, err)
	}
	// The strict decode stopped at the first unknown field, before any enum after it.
	var tree any
	if err := json.Unmarshal(data, &tree); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", msg, err)
	}
	if err := checkEnumNames(tree, m.ProtoReflect().Descriptor()); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", msg, err)
	}
	return nil
}

// errUnknownEnum reports an enum name the schema does not have.
var errUnknownEnum = errors.New("rpc: invalid value for enum field")

// checkEnumNames walks a decoded JSON object along a message descriptor and refuses any
// string given for an enum field that is not one of the enum's names.
func checkEnumNames(v any, md protoreflect.MessageDescriptor) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil // well-known types with non-object JSON forms; protojson checked them
	}
	fields := md.Fields()
	for key, val := range obj {
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		if fd == nil {
			continue // an unknown field, forgiven
		}
		if err := checkFieldValue(val, fd); err != nil {
			return err
		}
	}
	return nil
}

func checkFieldValue(val any, fd protoreflect.FieldDescriptor) error {
	switch {
	case fd.IsMap():
		m, _ := val.(map[string]any)
		for _, item := range m {
			if err := checkValue(item, fd.MapValue()); err != nil {
				return err
			}
		}
	case fd.IsList():
		list, _ := val.([]any)
		for _, item := range list {
			if err := checkValue(item, fd); err != nil {
				return err
			}
		}
	default:
		return checkValue(val, fd)
	}
	return nil
}

func checkValue(val any, fd protoreflect.FieldDescriptor) error {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		name, ok := val.(string)
		if ok && fd.Enum().Values().ByName(protoreflect.Name(name)) == nil {
			return fmt.Errorf("%w %s: %q", errUnknownEnum, fd.JSONName(), name)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkEnumNames(val, fd.Message())
	}
	return nil
}
