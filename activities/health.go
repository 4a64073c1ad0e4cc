package activities

import (
	"context"
	"os"
)

// Health answers the health-check ping workflow.
type Health struct{ Deps }

// PingResult tells which worker answered.
type PingResult struct {
	Host string
	PID  int
}

// HealthPing proves a worker polls the task queue and reaches the inventory.
func (a *Health) HealthPing(ctx context.Context) (PingResult, error) {
	if err := a.DB.PingContext(ctx); err != nil {
		return PingResult{}, err
	}
	host, _ := os.Hostname()
	return PingResult{Host: host, PID: os.Getpid()}, nil
}
