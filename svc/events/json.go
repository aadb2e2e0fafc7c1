package events

import (
	"fmt"
	"log/slog"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// JSON renders an event for humans (the monitor, logs, debugging tools): the protobuf
// JSON mapping with proto field names, so it reads like the schema. The wire format on
// the bus stays binary protobuf.
func JSON(ev *eventsv1.Event) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("%w: json: %w", ErrDecode, err)
	}
	return b, nil
}

// LogValue is an event as a log attribute value: its JSON rendering, or its id and type
// when it cannot be rendered.
func LogValue(ev *eventsv1.Event) slog.Value {
	b, err := JSON(ev)
	if err != nil {
		return slog.GroupValue(slog.String("id", ev.GetId()), slog.String("type", Name(ev.GetType())))
	}
	return slog.StringValue(string(b))
}
