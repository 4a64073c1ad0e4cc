package api

import (
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// scheduleSettings are the settings whose system schedule follows a change
// at once (the others are read when a worker starts): each gives the
// schedule for a value, or a 431 for a bad one.
var scheduleSettings = map[string]func(value string) (ntemporal.ScheduleSpec, error){
	"outofbandmanagement.sync.interval": func(v string) (ntemporal.ScheduleSpec, error) {
		ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || ms < 1000 {
			return ntemporal.ScheduleSpec{}, cserr.Param("outofbandmanagement.sync.interval must be a number of milliseconds, at least 1000")
		}
		return workflows.OOBMSyncSchedule(time.Duration(ms) * time.Millisecond), nil
	},
}

// checkScheduleSetting refuses a value its schedule cannot take.
func checkScheduleSetting(name, value string) error {
	if f := scheduleSettings[name]; f != nil {
		_, err := f(value)
		return err
	}
	return nil
}

// followScheduleSetting brings the setting's schedule to the new value. A
// failure is logged, not returned: the value is stored, and every worker
// applies it when it starts.
func followScheduleSetting(c *Call, name, value string) {
	f := scheduleSettings[name]
	if f == nil {
		return
	}
	spec, err := f(value)
	if err == nil {
		err = ntemporal.EnsureSchedules(c.Ctx, c.S.Temporal, c.S.TaskQueue, []ntemporal.ScheduleSpec{spec})
	}
	if err != nil {
		c.S.Log.Warn("schedule not updated to the new setting; workers apply it when they start", "setting", name, "err", err)
	}
}
