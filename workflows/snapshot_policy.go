package workflows

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// SnapshotIntervals are the snapshot policy interval types, in the order of
// their numbers in CloudStack's responses (intervaltype is an integer in
// snapshotpolicy objects).
var SnapshotIntervals = []string{"HOURLY", "DAILY", "WEEKLY", "MONTHLY"}

// SnapshotIntervalNumber is CloudStack's number of an interval type, -1
// when unknown.
func SnapshotIntervalNumber(interval string) int {
	for i, s := range SnapshotIntervals {
		if strings.EqualFold(s, interval) {
			return i
		}
	}
	return -1
}

// SnapshotPolicyRunResult is what one run of a policy did.
type SnapshotPolicyRunResult struct {
	Skipped      string   `json:"skipped,omitempty"`
	SnapshotUUID string   `json:"snapshot,omitempty"`
	Deleted      []string `json:"deleted,omitempty"`
}

// SnapshotPolicyRun is the workflow a snapshot policy's Temporal Schedule
// starts: it takes a snapshot of the policy's volume (as createSnapshot
// does, with the same compensation), then deletes the policy's oldest
// snapshots beyond its maxsnaps. A policy or volume that is gone removes
// the schedule; a volume that is busy skips the run with a warning event.
func SnapshotPolicyRun(ctx workflow.Context, in activities.SnapshotPolicyRunInput) (SnapshotPolicyRunResult, error) {
	var res SnapshotPolicyRunResult
	ictx := withInventory(ctx)
	var st activities.SnapshotPolicyRunState
	if err := workflow.ExecuteActivity(ictx, snapAct.SnapshotPolicyPrepare, in).Get(ctx, &st); err != nil {
		return res, err
	}
	if st.Skip != "" {
		res.Skipped = st.Skip
		return res, nil
	}
	res.SnapshotUUID = st.SnapshotUUID
	if err := takeSnapshot(ctx, activities.SnapshotInput{SnapshotUUID: st.SnapshotUUID, Actor: st.Actor}); err != nil {
		return res, err
	}
	var old []string
	if err := workflow.ExecuteActivity(ictx, snapAct.SnapshotPolicyPrune, in).Get(ctx, &old); err != nil {
		return res, err
	}
	var firstErr error
	for _, id := range old {
		if err := deleteSnapshot(ctx, activities.SnapshotInput{SnapshotUUID: id, Actor: st.Actor}); err != nil {
			workflow.GetLogger(ctx).Error("cannot delete an old snapshot of a policy", "snapshot", id, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		res.Deleted = append(res.Deleted, id)
	}
	return res, firstErr
}

// SnapshotPolicySpec is a policy as its schedule needs it.
type SnapshotPolicySpec struct {
	PolicyUUID   string
	VolumeUUID   string
	IntervalType string // HOURLY, DAILY, WEEKLY, MONTHLY
	Schedule     string // "MM", "MM:HH", "MM:HH:DD"
	Timezone     string
	MaxSnaps     int
	Account      string
}

// SnapshotCalendar turns CloudStack's schedule of an interval type into a
// calendar: HOURLY "MM" (minute of every hour), DAILY "MM:HH", WEEKLY
// "MM:HH:DD" (DD 1-7, 1 is Sunday), MONTHLY "MM:HH:DD" (DD 1-28, so that
// every month has the day).
func SnapshotCalendar(interval, schedule string) (client.ScheduleCalendarSpec, error) {
	var cal client.ScheduleCalendarSpec
	parts := strings.Split(strings.TrimSpace(schedule), ":")
	want := map[string]int{"HOURLY": 1, "DAILY": 2, "WEEKLY": 3, "MONTHLY": 3}[strings.ToUpper(interval)]
	if want == 0 {
		return cal, fmt.Errorf("intervaltype %q: want HOURLY, DAILY, WEEKLY or MONTHLY", interval)
	}
	forms := []string{"", "MM", "MM:HH", "MM:HH:DD"}
	if len(parts) != want {
		return cal, fmt.Errorf("schedule %q: a %s policy takes %q", schedule, strings.ToUpper(interval), forms[want])
	}
	num := func(i, lo, hi int, what string) (int, error) {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("schedule %q: %s must be %d to %d", schedule, what, lo, hi)
		}
		return n, nil
	}
	mm, err := num(0, 0, 59, "the minute")
	if err != nil {
		return cal, err
	}
	cal.Minute = []client.ScheduleRange{{Start: mm}}
	cal.Hour = []client.ScheduleRange{{Start: 0, End: 23}}
	if want >= 2 {
		hh, err := num(1, 0, 23, "the hour")
		if err != nil {
			return cal, err
		}
		cal.Hour = []client.ScheduleRange{{Start: hh}}
	}
	switch strings.ToUpper(interval) {
	case "WEEKLY":
		dd, err := num(2, 1, 7, "the day of the week (1 is Sunday)")
		if err != nil {
			return cal, err
		}
		cal.DayOfWeek = []client.ScheduleRange{{Start: dd - 1}}
	case "MONTHLY":
		dd, err := num(2, 1, 28, "the day of the month")
		if err != nil {
			return cal, err
		}
		cal.DayOfMonth = []client.ScheduleRange{{Start: dd}}
	}
	cal.Comment = fmt.Sprintf("%s snapshot at %s", strings.ToLower(interval), schedule)
	return cal, nil
}

// SnapshotPolicySchedule is the Temporal Schedule of a policy: its
// calendar in the policy's time zone, whose action starts SnapshotPolicyRun
// on taskQueue. Runs do not overlap (one that is due while the last one
// still runs is skipped), and a run missed while Temporal was down is
// caught up within an hour.
func SnapshotPolicySchedule(p SnapshotPolicySpec, taskQueue string) (client.ScheduleOptions, error) {
	cal, err := SnapshotCalendar(p.IntervalType, p.Schedule)
	if err != nil {
		return client.ScheduleOptions{}, err
	}
	return client.ScheduleOptions{
		ID: activities.SnapshotPolicyScheduleID(p.PolicyUUID),
		Spec: client.ScheduleSpec{
			Calendars:    []client.ScheduleCalendarSpec{cal},
			TimeZoneName: p.Timezone,
		},
		Action: &client.ScheduleWorkflowAction{
			ID:        ntemporal.InternalID("snappolicyrun", p.PolicyUUID),
			Workflow:  SnapshotPolicyRun,
			Args:      []any{activities.SnapshotPolicyRunInput{PolicyUUID: p.PolicyUUID}},
			TaskQueue: taskQueue,
			// A run is a few activities; a day bounds one that is stuck.
			WorkflowExecutionTimeout: 24 * time.Hour,
			Memo:                     map[string]any{"volume": p.VolumeUUID, "policy": p.PolicyUUID},
		},
		Overlap:       enums.SCHEDULE_OVERLAP_POLICY_SKIP,
		CatchupWindow: time.Hour,
		Note:          fmt.Sprintf("%s snapshots of volume %s, keep %d", strings.ToLower(p.IntervalType), p.VolumeUUID, p.MaxSnaps),
		Memo: map[string]any{
			"volume": p.VolumeUUID, "account": p.Account, "intervaltype": p.IntervalType,
			"schedule": p.Schedule, "timezone": p.Timezone, "maxsnaps": p.MaxSnaps,
		},
	}, nil
}
