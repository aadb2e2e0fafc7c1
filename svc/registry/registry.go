// Package registry is how Reelway's services find each other: each process registers its
// instance with a health check, and consumers watch the set of passing instances. Consul is
// the production backend; an in-process catalog stands in for it when no Consul address is
// configured, so a single `reelway dev` process needs nothing installed.
package registry

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Meta keys every Reelway instance registers.
const (
	// MetaProtoServices lists the full names of the proto services an instance serves,
	// comma-separated. The gateway derives its route table from it.
	MetaProtoServices = "proto_services"
	// MetaVersion is the build version of the instance.
	MetaVersion = "version"
)

// DefaultTags are the tags every Reelway instance registers with.
var DefaultTags = []string{"v1", "microservice"}

// ErrNoInstance means no passing instance of a service is known.
var ErrNoInstance = errors.New("registry: no passing instance")

// Health is an instance's check state.
type Health string

// Check states, as Consul names them.
const (
	HealthPassing  Health = "passing"
	HealthWarning  Health = "warning"
	HealthCritical Health = "critical"
)

// Instance is one running copy of a service.
type Instance struct {
	ID      string
	Name    string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	Health  Health
}

// Registration is what a process registers about itself.
type Registration struct {
	Instance
	// HealthURL is polled by the registry; any 2xx answer is passing.
	HealthURL string
	// CheckInterval is how often HealthURL is polled.
	CheckInterval time.Duration
	// DeregisterAfter removes an instance that stayed critical this long (a crashed process).
	DeregisterAfter time.Duration
}

// Registry registers instances and reports the catalog.
type Registry interface {
	// Register adds or replaces the instance with reg.ID.
	Register(ctx context.Context, reg Registration) error
	// Deregister removes the instance with that id; an unknown id is not an error.
	Deregister(ctx context.Context, id string) error
	// Watch calls fn with every instance (any health) now and after each change, until ctx
	// ends. It returns ctx's error.
	Watch(ctx context.Context, fn func([]Instance)) error
}

// InstanceID is the registration id of a service on a port: "<name>-<port>".
func InstanceID(name string, port int) string {
	return name + "-" + strconv.Itoa(port)
}

// HostPort is the instance's dialable address.
func (i Instance) HostPort() string {
	return net.JoinHostPort(i.Address, strconv.Itoa(i.Port))
}

// BaseURL is the instance's h2c base URL.
func (i Instance) BaseURL() string {
	return "http://" + i.HostPort()
}

// ProtoServices returns the proto services the instance declares it serves.
func (i Instance) ProtoServices() []string {
	raw := i.Meta[MetaProtoServices]
	if raw == "" {
		return nil
	}
	parts := strings.Split(raw, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Passing keeps the instances whose check passes, sorted by id for stable balancing.
func Passing(all []Instance) []Instance {
	out := make([]Instance, 0, len(all))
	for _, in := range all {
		if in.Health == HealthPassing {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}
