package gateway

import (
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// method is what the gateway knows about one procedure from the schema.
type method struct {
	// route is the metrics label: the procedure path.
	route string
	// idempotent is true for NO_SIDE_EFFECTS and IDEMPOTENT methods: they may be retried
	// on another instance after a backend failure.
	idempotent bool
	// clientStream and serverStream give the streaming kind; a unary method is neither.
	clientStream bool
	serverStream bool
}

// unary says whether the method is a plain request/response call.
func (m *method) unary() bool { return !m.clientStream && !m.serverStream }

// methodTable maps "/pkg.Service/Method" to what the schema says about it, for every
// method of the known proto services found in files.
func methodTable(files *protoregistry.Files, services []string) map[string]*method {
	out := make(map[string]*method)
	for _, name := range services {
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		ms := sd.Methods()
		for i := range ms.Len() {
			md := ms.Get(i)
			path := "/" + name + "/" + string(md.Name())
			level := descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
			if opts, ok := md.Options().(*descriptorpb.MethodOptions); ok && opts != nil {
				level = opts.GetIdempotencyLevel()
			}
			out[path] = &method{
				route:        path,
				idempotent:   level == descriptorpb.MethodOptions_NO_SIDE_EFFECTS || level == descriptorpb.MethodOptions_IDEMPOTENT,
				clientStream: md.IsStreamingClient(),
				serverStream: md.IsStreamingServer(),
			}
		}
	}
	return out
}
