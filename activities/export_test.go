package activities

import (
	"context"
	"time"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/planner"
)

// PlaceCandidates is the host list of a placement's first snapshot, for
// tests (a plain function: exported methods of VMs are activities).
func PlaceCandidates(ctx context.Context, a *VMs, zoneID int64, req planner.Request) ([]models.Host, error) {
	snap, err := a.planSnapshot(ctx, zoneID, req, false)
	if err != nil {
		return nil, err
	}
	out := make([]models.Host, len(snap.Hosts))
	for i, h := range snap.Hosts {
		out[i] = models.Host{ID: h.ID, Name: h.Name}
	}
	return out, nil
}

// SetWatchHostsEvery sets how often a cluster watch looks at its hosts,
// for tests; it answers a function that restores it.
func SetWatchHostsEvery(d time.Duration) func() {
	old := watchHostsEvery
	watchHostsEvery = d
	return func() { watchHostsEvery = old }
}
