package registry

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
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

// update installs a registry answer. The watch reports unchanged answers too (each one
// is a sync that keeps Age low); only a real change rebuilds the tables and wakes Changed.
func (c *Catalog) update(all []Instance) {
	c.mu.RLock()
	same := !c.synced.IsZero() && sameInstances(c.all, all)
	c.mu.RUnlock()
	if same {
		c.mu.Lock()
		c.synced = time.Now()
		c.mu.Unlock()
		return
	}
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

// sameInstances says whether two answers list the same instances in any order.
func sameInstances(a, b []Instance) bool {
	if len(a) != len(b) {
		return false
	}
	byID := func(x, y Instance) int { return strings.Compare(x.ID, y.ID) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, byID)
	slices.SortFunc(b, byID)
	return slices.EqualFunc(a, b, func(x, y Instance) bool {
		return x.ID == y.ID && x.Name == y.Name && x.Address == y.Address && x.Port == y.Port &&
			x.Health == y.Health && slices.Equal(x.Tags, y.Tags) && maps.Equal(x.Meta, y.Meta)
	})
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

// Age is how long ago the catalog last heard from the registry, changed or not; zero
// before the first sync. It grows while the registry is unreachable.
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
