package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Async job status codes, as CloudStack's jobstatus.
const (
	JobPending   = 0
	JobSucceeded = 1
	JobFailed    = 2
)

// AsyncJob mirrors one Temporal workflow: UUID is the workflow ID.
// Result holds the JSON of jobresult once the job ends.
type AsyncJob struct {
	bun.BaseModel `bun:"table:async_jobs"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(64)"`
	Cmd           string    `bun:"cmd,notnull"`
	UserID        int64     `bun:"user_id,notnull"`
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	InstanceType  string    `bun:"instance_type"`
	InstanceUUID  string    `bun:"instance_uuid,type:varchar(40)"`
	Status        int       `bun:"status,notnull"`
	ProcStatus    int       `bun:"proc_status,notnull"`
	ResultCode    int       `bun:"result_code,notnull"`
	Result        string    `bun:"result,type:text"`
	RunID         string    `bun:"run_id"`
	Created       time.Time `bun:"created,notnull"`
	Completed     time.Time `bun:"completed,nullzero"`
}

// Event is an audit record of an action (listEvents).
type Event struct {
	bun.BaseModel `bun:"table:events"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Type          string    `bun:"type,notnull"`  // e.g. VM.CREATE
	Level         string    `bun:"level,notnull"` // INFO, WARN, ERROR
	State         string    `bun:"state,notnull"` // Scheduled, Started, Completed
	Description   string    `bun:"description,type:text"`
	UserID        int64     `bun:"user_id,notnull"`
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	ResourceType  string    `bun:"resource_type"`
	ResourceUUID  string    `bun:"resource_uuid,type:varchar(40)"`
	JobUUID       string    `bun:"job_uuid,type:varchar(64)"`
	Created       time.Time `bun:"created,notnull"`
}
