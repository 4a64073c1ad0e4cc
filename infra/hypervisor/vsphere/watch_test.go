package vsphere_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// TestWatchVMs powers a VM off and on behind the driver's back (another
// vCenter client) and destroys it: WatchVMs reports each within seconds,
// and nothing for a VM on another host.
func TestWatchVMs(t *testing.T) {
	t.Setenv(vsphere.WatchEnv, "true")
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h1, h2 := e.hosts[0], e.hosts[1]
	mk := func(h hypervisor.Host, name, uuid string) hypervisor.VMSpec {
		return runningVM(ctx, t, e, h, name, uuid)
	}
	s := mk(h1, "i-2-40-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000400")
	other := mk(h2, "i-2-41-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000410")

	events, err := e.drv.WatchVMs(ctx, h1)
	if err != nil {
		t.Fatalf("WatchVMs: %v", err)
	}
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(context.Background())
	vm := func(name string) *object.VirtualMachine {
		ref, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0/vm/"+name)
		if err != nil || ref == nil {
			t.Fatalf("find %s: %v", name, err)
		}
		return object.NewVirtualMachine(c.Client, ref.Reference())
	}
	want := func(state hypervisor.State, reason string) {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the watch ended, want %s/%s", state, reason)
			}
			if ev.UUID != s.UUID || ev.Name != s.Name || ev.State != state || ev.Reason != reason || ev.HostID != h1.ID {
				t.Fatalf("event = %+v, want %s %s/%s", ev, s.Name, state, reason)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event within 5 s, want %s/%s", state, reason)
		}
	}
	power := func(v *object.VirtualMachine, on bool) {
		t.Helper()
		var task *object.Task
		var err error
		if on {
			task, err = v.PowerOn(ctx)
		} else {
			task, err = v.PowerOff(ctx)
		}
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	power(vm(other.Name), false) // on h2: not this watch's
	power(vm(s.Name), false)
	want(hypervisor.StateStopped, "stopped")
	// A VM made after the watch began is followed too: defined (Stopped,
	// then started; or Running at once when both land in one update).
	late := mk(h1, "i-2-42-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000420")
	for i := 0; ; i++ {
		select {
		case ev := <-events:
			if ev.UUID != late.UUID || (i == 0 && ev.Reason != "defined") || (i > 0 && ev.Reason != "started") {
				t.Fatalf("event %d = %+v, want %s defined then started", i, ev, late.Name)
			}
			if ev.State != hypervisor.StateRunning {
				continue
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no Running event of the new VM within 5 s")
		}
		break
	}
	power(vm(s.Name), true)
	want(hypervisor.StateRunning, "started")
	if err := e.drv.DestroyVM(ctx, h1, s.Ref()); err != nil {
		t.Fatal(err)
	}
	want(hypervisor.StateStopped, "stopped")
	want("", "undefined")
	cancel()
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
}

// TestWatchVMsUnderChurn defines, starts and destroys VMs from several
// goroutines while a watch of each host runs (what `nimbus bench
// vsphere` does): the simulator must neither deadlock nor panic (it did
// with a container-view filter), and each watch still reports a VM made
// on its host afterwards. (A VM made and destroyed between two polls may
// go unreported by the simulator, which collects a filter's objects when
// it answers, not when they change: nothing is asserted of those.)
func TestWatchVMsUnderChurn(t *testing.T) {
	t.Setenv(vsphere.WatchEnv, "true")
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan hypervisor.VMEvent
	for _, h := range e.hosts {
		ch, err := e.drv.WatchVMs(ctx, h)
		if err != nil {
			t.Fatalf("WatchVMs %s: %v", h.ID, err)
		}
		chans = append(chans, ch)
	}
	watchChurn(ctx, t, e, chans)
}

// TestWatchClusterVMsUnderChurn is the same churn under one watch of all
// the cluster's hosts (one collector, a filter spec per host).
func TestWatchClusterVMsUnderChurn(t *testing.T) {
	t.Setenv(vsphere.WatchEnv, "true")
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.drv.WatchClusterVMs(ctx, e.hosts)
	if err != nil {
		t.Fatalf("WatchClusterVMs: %v", err)
	}
	chans := make([]<-chan hypervisor.VMEvent, len(e.hosts))
	for i := range chans {
		chans[i] = ch
	}
	watchChurn(ctx, t, e, chans)
}

// watchChurn churns VMs on e's hosts while the watches run (chans[i] has
// the events of host i; hosts may share one), then checks that each host's
// watch reports a VM made on it afterwards.
func watchChurn(ctx context.Context, t *testing.T, e *env, watches []<-chan hypervisor.VMEvent) {
	t.Helper()
	// Read all along, as the watch activity does, so each watch polls
	// while the VMs churn.
	bufs := map[<-chan hypervisor.VMEvent]chan hypervisor.VMEvent{}
	chans := make([]<-chan hypervisor.VMEvent, len(watches))
	for i, ch := range watches {
		buf, ok := bufs[ch]
		if !ok {
			buf = make(chan hypervisor.VMEvent, 1024)
			bufs[ch] = buf
			go func() {
				defer close(buf)
				for ev := range ch {
					buf <- ev
				}
			}()
		}
		chans[i] = buf
	}
	mk := func(h hypervisor.Host, name, uuid string, start bool) (hypervisor.VMSpec, error) {
		root, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: name, Path: name, SizeBytes: 16 << 20})
		if err != nil {
			return hypervisor.VMSpec{}, err
		}
		s := spec(name, uuid, hypervisor.Disk{Path: root.Path})
		if _, err = e.drv.DefineVM(ctx, h, s); err == nil && start {
			err = e.drv.StartVM(ctx, h, s.Ref())
		}
		return s, err
	}
	const workers, per = 8, 6
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < per; i++ {
				h := e.hosts[(w+i)%len(e.hosts)]
				s, err := mk(h, fmt.Sprintf("i-2-%d-VM", 500+w*per+i), fmt.Sprintf("5b9d0a53-6f1e-4c3e-9f4e-0a00000%05d", w*per+i), true)
				if err == nil {
					err = e.drv.DestroyVM(ctx, h, s.Ref())
				}
				if err != nil {
					errs <- fmt.Errorf("%s on %s: %w", s.Name, h.ID, err)
					return
				}
			}
			errs <- nil
		}()
	}
	deadline := time.After(90 * time.Second)
	for w := 0; w < workers; w++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("VM churn under watches did not finish within 90 s (the simulator hung)")
		}
	}
	for i, h := range e.hosts {
		s, err := mk(h, fmt.Sprintf("i-2-%d-VM", 600+i), fmt.Sprintf("5b9d0a53-6f1e-4c3e-9f4e-0b00000%05d", i), false)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
		for found := false; !found; {
			select {
			case ev, ok := <-chans[i]:
				if !ok {
					t.Fatalf("the watch of %s ended", h.ID)
				}
				found = ev.UUID == s.UUID && ev.Reason == "defined" && ev.HostID == h.ID
			case <-timeout:
				t.Fatalf("the watch of %s did not report %s within 10 s after the churn", h.ID, s.Name)
			}
		}
	}
}

// TestWatchClusterVMs watches two hosts of the cluster in one collector:
// a VM powered off behind the driver's back on either is reported within
// seconds naming its own host, and nothing for a VM on the third host.
func TestWatchClusterVMs(t *testing.T) {
	t.Setenv(vsphere.WatchEnv, "true")
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h1, h2, h3 := e.hosts[0], e.hosts[1], e.hosts[2]
	mk := func(h hypervisor.Host, name, uuid string) hypervisor.VMSpec {
		return runningVM(ctx, t, e, h, name, uuid)
	}
	a := mk(h1, "i-2-50-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000500")
	b := mk(h2, "i-2-51-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000510")
	other := mk(h3, "i-2-52-VM", "5b9d0a53-6f1e-4c3e-9f4e-0a0000000520")

	events, err := e.drv.WatchClusterVMs(ctx, []hypervisor.Host{h1, h2})
	if err != nil {
		t.Fatalf("WatchClusterVMs: %v", err)
	}
	c, err := e.sim.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout(context.Background())
	off := func(name string) {
		t.Helper()
		ref, err := object.NewSearchIndex(c.Client).FindByInventoryPath(ctx, "/DC0/vm/"+name)
		if err != nil || ref == nil {
			t.Fatalf("find %s: %v", name, err)
		}
		task, err := object.NewVirtualMachine(c.Client, ref.Reference()).PowerOff(ctx)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want := func(s hypervisor.VMSpec, h hypervisor.Host) {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the watch ended, want %s stopped", s.Name)
			}
			if ev.UUID != s.UUID || ev.State != hypervisor.StateStopped || ev.Reason != "stopped" || ev.HostID != h.ID {
				t.Fatalf("event = %+v, want %s stopped on %s", ev, s.Name, h.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event within 5 s, want %s stopped on %s", s.Name, h.ID)
		}
	}
	off(other.Name) // on h3: not watched
	off(a.Name)
	want(a, h1)
	off(b.Name)
	want(b, h2)
	cancel()
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
}

// runningVM defines and starts a VM with a root disk on datastore 0.
func runningVM(ctx context.Context, t *testing.T, e *env, h hypervisor.Host, name, uuid string) hypervisor.VMSpec {
	t.Helper()
	root, err := e.pools.CreateVolume(ctx, e.ds0, storage.VolumeSpec{ID: name, Path: name, SizeBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := spec(name, uuid, hypervisor.Disk{Path: root.Path})
	if _, err := e.drv.DefineVM(ctx, h, s); err != nil {
		t.Fatal(err)
	}
	if err := e.drv.StartVM(ctx, h, s.Ref()); err != nil {
		t.Fatal(err)
	}
	return s
}
