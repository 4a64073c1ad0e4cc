package temporal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// ScheduleSpec is one system schedule: a workflow started every Interval
// on the worker's task queue.
type ScheduleSpec struct {
	// Kind names the schedule; its ID is ScheduleID(Kind, taskQueue).
	Kind     string
	Interval time.Duration
	// Workflow is the workflow function (or its registered name) and Args
	// its arguments.
	Workflow any
	Args     []any
	// What says what the schedule does (its memo and note).
	What string
}

// ScheduleID is the ID of a system schedule: "nimbus-<kind>-<task queue>",
// so stacks that share one namespace with their own queues keep their own.
func ScheduleID(kind, taskQueue string) string { return InternalID(kind, taskQueue) }

// scheduleCatchup is how late a missed run may still start: maintenance
// runs again soon anyway, so a run missed in an outage is not replayed.
const scheduleCatchup = time.Minute

// EnsureSchedules creates the system schedules, or brings an existing one's
// interval, action and memo up to date. Many workers run it at once: a
// schedule another one created meanwhile is success (and updated).
func EnsureSchedules(ctx context.Context, c client.Client, taskQueue string, specs []ScheduleSpec) error {
	sc := c.ScheduleClient()
	for _, s := range specs {
		if s.Interval <= 0 {
			return fmt.Errorf("schedule %s: interval %s must be positive", s.Kind, s.Interval)
		}
		id := ScheduleID(s.Kind, taskQueue)
		opts := client.ScheduleOptions{
			ID:            id,
			Spec:          client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: s.Interval}}},
			Action:        scheduleAction(s, id, taskQueue),
			Overlap:       enums.SCHEDULE_OVERLAP_POLICY_SKIP,
			CatchupWindow: scheduleCatchup,
			Note:          s.What,
			Memo:          scheduleMemo(s, taskQueue),
		}
		_, err := sc.Create(ctx, opts)
		if err == nil {
			continue
		}
		if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) && !isAlreadyExists(err) {
			return fmt.Errorf("temporal: create schedule %s: %w", id, err)
		}
		if err := updateSchedule(ctx, sc.GetHandle(ctx, id), s, id, taskQueue); err != nil {
			return fmt.Errorf("temporal: update schedule %s: %w", id, err)
		}
	}
	return nil
}

func scheduleAction(s ScheduleSpec, id, taskQueue string) *client.ScheduleWorkflowAction {
	return &client.ScheduleWorkflowAction{
		ID:        id, // Temporal appends the run's time
		Workflow:  s.Workflow,
		Args:      s.Args,
		TaskQueue: taskQueue,
		// A run that hangs longer than this is cut so the next one starts.
		WorkflowExecutionTimeout: 6 * time.Hour,
		Memo:                     map[string]any{"schedule": id, "what": s.What},
	}
}

func scheduleMemo(s ScheduleSpec, taskQueue string) map[string]any {
	return map[string]any{
		"what":      s.What,
		"interval":  s.Interval.String(),
		"taskqueue": taskQueue,
		"id":        "nimbus-<kind>-<task queue>: each stack's workers keep their own schedules",
	}
}

// updateSchedule rewrites the spec and action when the interval or the
// action changed; an unchanged schedule is left alone (its next run stays).
func updateSchedule(ctx context.Context, h client.ScheduleHandle, s ScheduleSpec, id, taskQueue string) error {
	return h.Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			sch := in.Description.Schedule
			same := sch.Spec != nil && len(sch.Spec.Intervals) == 1 && sch.Spec.Intervals[0].Every == s.Interval &&
				len(sch.Spec.Calendars) == 0 && len(sch.Spec.CronExpressions) == 0
			if act, ok := sch.Action.(*client.ScheduleWorkflowAction); !ok || act.TaskQueue != taskQueue {
				same = false
			}
			if same && sch.Policy != nil && sch.Policy.Overlap == enums.SCHEDULE_OVERLAP_POLICY_SKIP {
				return nil, temporal.ErrSkipScheduleUpdate
			}
			sch.Spec = &client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: s.Interval}}}
			sch.Action = scheduleAction(s, id, taskQueue)
			if sch.Policy == nil {
				sch.Policy = &client.SchedulePolicies{}
			}
			sch.Policy.Overlap = enums.SCHEDULE_OVERLAP_POLICY_SKIP
			sch.Policy.CatchupWindow = scheduleCatchup
			if sch.State == nil {
				sch.State = &client.ScheduleState{}
			}
			sch.State.Note = s.What
			return &client.ScheduleUpdate{Schedule: &sch}, nil
		},
	})
}

func isAlreadyExists(err error) bool {
	var ae *serviceerror.AlreadyExists
	var wae *serviceerror.WorkflowExecutionAlreadyStarted
	return errors.As(err, &ae) || errors.As(err, &wae)
}
