package tests

import (
	"context"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/sdk/client"

	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// maintTrigger triggers a system schedule until check holds (a trigger
// while a run is still going is skipped by the overlap policy).
func maintTrigger(t *testing.T, h client.ScheduleHandle, what string, within time.Duration, check func() bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for {
		if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
			t.Fatalf("trigger %s: %v", h.GetID(), err)
		}
		for i := 0; i < 10; i++ {
			time.Sleep(500 * time.Millisecond)
			if check() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within %s of triggering %s", what, within, h.GetID())
		}
	}
}

func TestMaintenanceSchedules(t *testing.T) {
	c := vmtSetup(t)
	cs, s, db, ctx := c.cs, c.s, c.s.DB, context.Background()
	tc, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	// ---- the schedules exist, per task queue, with the configured intervals ----
	handles := map[string]client.ScheduleHandle{}
	for kind, every := range map[string]time.Duration{"expunge": 86400 * time.Second, "reconcile": 300 * time.Second, "capacity-alerts": 5 * time.Minute} {
		id := ntemporal.ScheduleID(kind, s.TaskQueue)
		h := tc.ScheduleClient().GetHandle(ctx, id)
		// The worker sets its schedules in the background once it polls.
		d, err := h.Describe(ctx)
		for deadline := time.Now().Add(30 * time.Second); err != nil && time.Now().Before(deadline); d, err = h.Describe(ctx) {
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("describe schedule %s: %v", id, err)
		}
		if iv := d.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != every {
			t.Errorf("schedule %s intervals %+v, want every %s", id, iv, every)
		}
		if act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction); !ok || act.TaskQueue != s.TaskQueue {
			t.Errorf("schedule %s action %+v", id, d.Schedule.Action)
		}
		if d.Memo == nil || d.Memo.Fields["what"] == nil {
			t.Errorf("schedule %s has no memo saying what it does", id)
		}
		handles[kind] = h
	}

	// ---- a VM stopped behind Nimbus's back is found Stopped ----
	d, err := c.deploy(t, cs, "drift1", nil)
	if err != nil {
		t.Fatalf("deployVirtualMachine: %v", err)
	}
	hostSim(t, s, "action", "setvmstate", "virtualmachineid", d.Id, "vmstate", "Stopped")
	maintTrigger(t, handles["reconcile"], "drift1 Stopped", 60*time.Second, func() bool {
		vm := c.vm(t, cs, d.Id)
		return vm != nil && vm.State == "Stopped"
	})
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'VM.STOP' AND level = 'WARN' AND resource_uuid = ?", d.Id); n != 1 {
		t.Errorf("%d WARN VM.STOP events of the reconciler, want 1", n)
	}
	if mhz, mem := c.used(t); mhz != 0 || mem != 0 {
		t.Errorf("capacity still used after the reconciler stopped the VM: %d MHz %d bytes", mhz, mem)
	}
	// It starts again through Nimbus.
	if _, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(d.Id)); err != nil {
		t.Fatalf("startVirtualMachine after the repair: %v", err)
	}

	// ---- a silent host goes Alert, and back Up when it answers ----
	hostID := c.hosts["vmh2"]
	hostState := func() string {
		p := cs.Host.NewListHostsParams()
		p.SetId(hostID)
		r := vmtMust[*cloudstack.ListHostsResponse](t, "listHosts")(cs.Host.ListHosts(p))
		if r.Count != 1 {
			return ""
		}
		return r.Hosts[0].State
	}
	hostSim(t, s, "action", "hostdown", "hostid", hostID)
	maintTrigger(t, handles["reconcile"], "vmh2 Alert", 60*time.Second, func() bool { return hostState() == "Alert" })
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'HOST.ALERT' AND resource_uuid = ?", hostID); n != 1 {
		t.Errorf("%d HOST.ALERT events, want 1", n)
	}
	hostSim(t, s, "action", "hostup", "hostid", hostID)
	maintTrigger(t, handles["reconcile"], "vmh2 Up", 60*time.Second, func() bool { return hostState() == "Up" })

	// ---- a destroyed VM is expunged after expunge.delay ----
	up := cs.Configuration.NewUpdateConfigurationParams("expunge.delay")
	up.SetValue("1")
	if _, err := cs.Configuration.UpdateConfiguration(up); err != nil {
		t.Fatalf("updateConfiguration expunge.delay: %v", err)
	}
	if _, err := cs.VirtualMachine.DestroyVirtualMachine(cs.VirtualMachine.NewDestroyVirtualMachineParams(d.Id)); err != nil {
		t.Fatalf("destroyVirtualMachine: %v", err)
	}
	if vm := c.vm(t, cs, d.Id); vm == nil || vm.State != "Destroyed" {
		t.Fatalf("after destroy: %+v", vm)
	}
	// The worker's configuration cache takes up to 10 s to see the delay.
	maintTrigger(t, handles["expunge"], "drift1 expunged", 90*time.Second, func() bool {
		return nsCount(t, db, "SELECT COUNT(*) FROM vm_instances WHERE uuid = ? AND removed IS NULL", d.Id) == 0
	})
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type = 'VM.EXPUNGE' AND resource_uuid = ?", d.Id); n != 1 {
		t.Errorf("%d VM.EXPUNGE events, want 1", n)
	}
	if n := c.freeIPs(t); n != vmtNetSize {
		t.Errorf("%d free addresses after the expunge, want %d", n, vmtNetSize)
	}

	// ---- capacity alerts: none on an idle cloud ----
	maintTrigger(t, handles["capacity-alerts"], "capacity run", 30*time.Second, func() bool { return true })
	r, err := cs.Alert.ListAlerts(cs.Alert.NewListAlertsParams())
	if err != nil {
		t.Fatalf("listAlerts: %v", err)
	}
	if r.Count != 0 {
		t.Errorf("listAlerts on an idle cloud: %+v", r.Alerts)
	}
}
