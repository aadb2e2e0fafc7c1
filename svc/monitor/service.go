// Package monitor is the MonitorService: the platform's health as the service registry sees
// it, for dashboards and operators.
package monitor

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	monitorv1 "github.com/reelway/reelway/gen/reelway/monitor/v1"
	"github.com/reelway/reelway/gen/reelway/monitor/v1/monitorv1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Catalog lists every registered instance with its health, as last seen. Reading a cached
// view keeps GetOverview fast and independent of the registry's availability.
type Catalog interface {
	All() []registry.Instance
}

var _ Catalog = (*registry.Catalog)(nil)

// Service implements MonitorService.
type Service struct {
	log *slog.Logger
	cat Catalog
	now func() time.Time
}

var _ monitorv1connect.MonitorServiceHandler = (*Service)(nil)

// New returns the service reading cat.
func New(log *slog.Logger, cat Catalog) *Service {
	return &Service{log: log, cat: cat, now: time.Now}
}

// Mount registers the Connect handler.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := monitorv1connect.NewMonitorServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(monitorv1connect.MonitorServiceName, path, h)
	return nil
}

// GetOverview implements MonitorServiceHandler. Instances of every health are listed, so a
// failing instance shows up instead of silently disappearing.
func (s *Service) GetOverview(ctx context.Context, _ *monitorv1.GetOverviewRequest) (*monitorv1.GetOverviewResponse, error) {
	all := slices.Clone(s.cat.All()) // sorted below; the catalog's slice is not ours
	slices.SortFunc(all, func(a, b registry.Instance) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	res := &monitorv1.GetOverviewResponse{
		Instances:   make([]*monitorv1.ServiceInstance, 0, len(all)),
		ObserveTime: timestamppb.New(s.now()),
	}
	passing := make(map[string]bool)
	for _, in := range all {
		h := health(in.Health)
		if h == monitorv1.Health_HEALTH_PASSING {
			passing[in.Name] = true
		}
		res.Instances = append(res.Instances, &monitorv1.ServiceInstance{
			Id:            in.ID,
			Service:       in.Name,
			Address:       in.Address,
			Port:          int32(in.Port),
			Health:        h,
			ProtoServices: in.ProtoServices(),
			Version:       in.Meta[registry.MetaVersion],
		})
	}
	res.ServicesPassing = int32(len(passing))
	s.log.DebugContext(ctx, "overview", "instances", len(all), "services_passing", len(passing))
	return res, nil
}

func health(h registry.Health) monitorv1.Health {
	switch h {
	case registry.HealthPassing:
		return monitorv1.Health_HEALTH_PASSING
	case registry.HealthWarning:
		return monitorv1.Health_HEALTH_WARNING
	case registry.HealthCritical:
		return monitorv1.Health_HEALTH_CRITICAL
	}
	return monitorv1.Health_HEALTH_UNSPECIFIED
}
