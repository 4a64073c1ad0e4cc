package libvirtconn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// A libvirtd that dies (here SIGKILL, as a crash) drops the pool's
// connection and its event streams; once libvirtd is back, Get dials a new
// one. The test kills a private libvirtd (its own mount namespace), so the
// shared one other tests use is never touched.
func TestReconnectAfterLibvirtdRestart(t *testing.T) {
	d := testenv.StartLibvirtd(t)
	p := libvirtconn.NewPool()
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := p.Get(ctx, d.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}

	// An event stream on the connection (what the driver's WatchVMs
	// reads) ends with it, so its consumer knows to reconcile.
	events, err := l.LifecycleEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.Kill()
	select {
	case <-l.Disconnected():
	case <-time.After(10 * time.Second):
		t.Fatal("the old connection did not notice libvirtd went away")
	}
	for closed := false; !closed; {
		select {
		case _, ok := <-events:
			closed = !ok
		case <-time.After(10 * time.Second):
			t.Fatal("the event stream stayed open after the connection dropped")
		}
	}
	if _, err := p.Get(ctx, d.URL, "", ""); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("Get while libvirtd is down = %v; want ErrUnreachable", err)
	}

	d.Start()
	l2, err := p.Get(ctx, d.URL, "", "")
	if err != nil {
		t.Fatalf("Get after libvirtd came back: %v", err)
	}
	if l2 == l {
		t.Fatal("Get returned the dead connection")
	}
	if _, err := l2.ConnectGetVersion(); err != nil {
		t.Fatal(err)
	}
}
