package gateway_test

import (
	"context"
	"testing"

	"github.com/reelway/reelway/gateway"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
)

// BenchmarkGatewayUnary drives unary calls through an in-process gateway to an in-process
// backend, to profile the proxy path (go test -bench Gateway -cpuprofile cpu.out). The
// numbers that count are in BENCHMARKS.md (`just bench`: separate processes).
func BenchmarkGatewayUnary(b *testing.B) {
	for _, p := range []protocol{protocols()[1], protocols()[2]} {
		b.Run(p.name, func(b *testing.B) {
			f := setup(b, 1, gateway.Options{})
			client := p.cache(f.gateway)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
