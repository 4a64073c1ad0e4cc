package api

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(&Command{
		Name: "configureSimulator",
		Description: "Sets the simulator's fault switches: fail the next N calls of an operation on a zone, pod, cluster, host or pool, " +
			"add latency, or make a host stop answering. The switches live with the simulator in the worker and survive its restart.",
		Access: AccessRootAdmin,
		Params: []Param{
			{Name: "action", Type: TString, Description: "add (default), remove, clear, hostdown, hostup, setvmstate or list"},
			{Name: "name", Type: TString, Description: "the operation the rule applies to (ConnectHost, StartVM, CreateVolume...); empty or * for all"},
			{Name: "zoneid", Type: TUUID, Description: "only calls on this zone"},
			{Name: "podid", Type: TUUID, Description: "only calls on this pod"},
			{Name: "clusterid", Type: TUUID, Description: "only calls on this cluster"},
			{Name: "hostid", Type: TUUID, Description: "only calls on this host (hostdown/hostup: the host)"},
			{Name: "poolid", Type: TUUID, Description: "only calls on this storage pool"},
			{Name: "count", Type: TInteger, Description: "fail the next count calls; -1 fails every call; 0 with latency only slows calls"},
			{Name: "probability", Type: TString, Description: "fail calls with this probability (0 to 1)"},
			{Name: "mode", Type: TString, Description: "how calls fail: error (default, retried), unreachable, hang, notfound, invalid, capacity"},
			{Name: "latency", Type: TInteger, Description: "milliseconds every matching call waits"},
			{Name: "message", Type: TString, Description: "text of the simulated failure"},
			{Name: "ruleid", Type: TLong, Description: "remove: the rule to remove"},
			{Name: "hang", Type: TBoolean, Description: "hostdown: calls block until their deadline instead of failing at once"},
			{Name: "virtualmachineid", Type: TUUID, Description: "setvmstate: the VM whose power state changes on its host, behind Nimbus's back"},
			{Name: "vmstate", Type: TString, Description: "setvmstate: Running or Stopped"},
		},
		ResponseName: "simulator", Response: []Field{
			{"ruleid", "long", "the rule added"}, {"rules", "list", "every rule now set"},
		},
		Handler: configureSimulator,
	})
}

// SimulatorRuleView is one fault switch.
type SimulatorRuleView struct {
	ID          int64   `json:"id"`
	Name        string  `json:"name,omitempty"`
	ZoneID      string  `json:"zoneid,omitempty"`
	PodID       string  `json:"podid,omitempty"`
	ClusterID   string  `json:"clusterid,omitempty"`
	HostID      string  `json:"hostid,omitempty"`
	PoolID      string  `json:"poolid,omitempty"`
	Count       int     `json:"count"`
	Probability float64 `json:"probability,omitempty"`
	Mode        string  `json:"mode"`
	Message     string  `json:"message,omitempty"`
	Latency     int64   `json:"latency"` // ms
}

// SimulatorView answers configureSimulator.
type SimulatorView struct {
	RuleID int64               `json:"ruleid,omitempty"`
	Rules  []SimulatorRuleView `json:"rules"`
}

func configureSimulator(c *Call) (any, error) {
	action := strings.ToLower(c.Str("action"))
	if action == "" {
		action = activities.SimAdd
	}
	in := activities.SimulatorConfigureInput{Action: action, HostUUID: c.Str("hostid"), Hang: c.Bool("hang", false), RuleID: c.Int("ruleid", 0)}
	for _, p := range []struct{ param, table string }{
		{"zoneid", "zones"}, {"podid", "pods"}, {"clusterid", "clusters"}, {"hostid", "hosts"}, {"poolid", "storage_pools"},
	} {
		if !c.Has(p.param) {
			continue
		}
		ok, err := c.S.DB.NewSelect().TableExpr(p.table).Where("uuid = ?", c.Str(p.param)).Exists(c.Ctx)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, cserr.Param("Unable to find %s %s", strings.TrimSuffix(p.param, "id"), c.Str(p.param))
		}
	}
	switch action {
	case activities.SimAdd:
		r := simkit.Rule{
			Op: c.Str("name"), Count: int(c.Int("count", 0)), Mode: simkit.Mode(strings.ToLower(c.Str("mode"))),
			Message: c.Str("message"), Latency: time.Duration(c.Int("latency", 0)) * time.Millisecond,
			Scope: simkit.Scope{Zone: c.Str("zoneid"), Pod: c.Str("podid"), Cluster: c.Str("clusterid"), Host: c.Str("hostid"), Pool: c.Str("poolid")},
		}
		if c.Has("probability") {
			p, err := strconv.ParseFloat(c.Str("probability"), 64)
			if err != nil || p < 0 || p > 1 {
				return nil, cserr.Param("probability %q: want a number from 0 to 1", clip(c.Str("probability"), 32))
			}
			r.Probability = p
		}
		if r.Count == 0 && r.Probability == 0 && r.Latency == 0 {
			return nil, cserr.Param("a rule needs count, probability or latency")
		}
		if r.Latency < 0 {
			return nil, cserr.Param("latency must not be negative")
		}
		in.Rule = r
	case activities.SimHostDown, activities.SimHostUp:
		if in.HostUUID == "" {
			return nil, cserr.Param("Unable to execute API command configuresimulator due to missing parameter hostid")
		}
	case activities.SimRemove:
		if in.RuleID == 0 {
			return nil, cserr.Param("Unable to execute API command configuresimulator due to missing parameter ruleid")
		}
	case activities.SimClear, activities.SimList:
	case activities.SimVMState:
		in.VMUUID, in.VMState = c.Str("virtualmachineid"), c.Str("vmstate")
		if in.VMUUID == "" || (in.VMState != "Running" && in.VMState != "Stopped") {
			return nil, cserr.Param("setvmstate takes virtualmachineid and vmstate Running or Stopped")
		}
	default:
		return nil, cserr.Param("action %q: want add, remove, clear, hostdown, hostup, setvmstate or list", clip(action, 32))
	}
	// The simulator lives in the worker: a short workflow carries the change
	// there and brings the rules back. It is not a job (nothing in the
	// inventory changes).
	ctx, cancel := context.WithTimeout(c.Ctx, time.Minute)
	defer cancel()
	run, err := c.S.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: "configure-simulator-" + models.NewUUID(), TaskQueue: c.S.TaskQueue, WorkflowExecutionTimeout: time.Minute,
	}, workflows.ConfigureSimulator, in)
	if err != nil {
		return nil, cserr.Internal("cannot reach the workers: %v", err)
	}
	var out activities.SimulatorConfigureResult
	if err := run.Get(ctx, &out); err != nil {
		if ctx.Err() != nil {
			return nil, cserr.Unavailable("no worker answered configureSimulator within a minute")
		}
		return nil, cserr.As(unwrapWorkflowError(err))
	}
	v := SimulatorView{RuleID: out.RuleID, Rules: make([]SimulatorRuleView, len(out.Rules))}
	for i, r := range out.Rules {
		v.Rules[i] = SimulatorRuleView{
			ID: r.ID, Name: r.Op, ZoneID: r.Scope.Zone, PodID: r.Scope.Pod, ClusterID: r.Scope.Cluster, HostID: r.Scope.Host,
			PoolID: r.Scope.Pool, Count: r.Count, Probability: r.Probability, Mode: string(r.Mode), Message: r.Message,
			Latency: r.Latency.Milliseconds(),
		}
	}
	return Object{"simulator": v}, nil
}
