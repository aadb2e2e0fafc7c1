package registry

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Catalog keeps the latest view of a Registry, fed by Watch, so that lookups on the request
// path never wait for the registry.
type Catalog struct {
	reg Registry
	log *slog.Logger

	mu      sync.RWMutex
	all     []Instance
	byName  map[string][]Instance
	byProto map[string][]Instance
	synced  time.Time
	changed chan struct{}
}

// NewCatalog returns a catalog that follows reg once Run is called.
func NewCatalog(reg Registry, log *slog.Logger) *Catalog {
	return &Catalog{reg: reg, log: log, changed: make(chan struct{})}
}

// Run follows the registry until ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	return c.reg.Watch(ctx, c.update)
}

func (c *Catalog) update(all []Instance) {
	byName := make(map[string][]Instance)
	byProto := make(map[string][]Instance)
	for _, in := range Passing(all) {
		byName[in.Name] = append(byName[in.Name], in)
		for _, ps := range in.ProtoServices() {
			byProto[ps] = append(byProto[ps], in)
		}
	}
	c.mu.Lock()
	c.all = all
	c.byName = byName
	c.byProto = byProto
	c.synced = time.Now()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Resolve returns the passing instances of a registered service name.
func (c *Catalog) Resolve(_ context.Context, name string) ([]Instance, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if in := c.byName[name]; len(in) > 0 {
		return in, nil
	}
	return nil, ErrNoInstance
}

// ResolveProto returns the passing instances that serve a proto service full name.
func (c *Catalog) ResolveProto(protoService string) []Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byProto[protoService]
}

// Routes returns the proto service → passing instances table.
func (c *Catalog) Routes() map[string][]Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string][]Instance, len(c.byProto))
	for k, v := range c.byProto {
		out[k] = v
	}
	return out
}

// All returns every instance with its health, as last seen.
func (c *Catalog) All() []Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]Instance(nil), c.all...)
}

// Age is how long ago the catalog last heard from the registry; zero before the first sync.
func (c *Catalog) Age() time.Duration {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.synced.IsZero() {
		return 0
	}
	return time.Since(c.synced)
}

// Changed returns a channel closed at the next update.
func (c *Catalog) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}
