package api

import (
	"errors"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	Register(&Command{
		Name:         "queryAsyncJobResult",
		Description:  "Retrieves the current status of an asynchronous job",
		Access:       AccessAll,
		ResponseName: "asyncjobs",
		Params:       []Param{{Name: "jobid", Type: TUUID, Required: true, Description: "the ID of the asynchronous job"}},
		Response:     jobFields,
		Handler:      queryAsyncJobResult,
	})
	Register(&Command{
		Name:        "listAsyncJobs",
		Description: "Lists all pending asynchronous jobs for the account",
		Access:      AccessAll,
		Params: append(OwnerListParams(),
			Param{Name: "startdate", Type: TDate, Description: "jobs created on or after this date"},
			Param{Name: "managementserverid", Type: TUUID, Description: "jobs of this management server (ignored: every server shares the jobs)"},
		),
		ResponseName: "asyncjobs",
		Response:     jobFields,
		Handler:      listAsyncJobs,
	})
}

// jobItem is a job with its owner's domain (cloudstack-go AsyncJob).
type jobItem struct {
	JobResponse
	DomainID   string `json:"domainid,omitempty"`
	DomainPath string `json:"domainpath,omitempty"`
}

// jobOwnerRow is what a job's view shows of its owner, read with the jobs
// in one query (removed accounts, users and domains included).
type jobOwnerRow struct {
	JobID         int64     `bun:"job_id"`
	AccountUUID   string    `bun:"account_uuid"`
	AccountName   string    `bun:"account_name"`
	UserUUID      string    `bun:"user_uuid"`
	DomainUUID    string    `bun:"domain_uuid"`
	DomainName    string    `bun:"domain_name"`
	DomainPath    string    `bun:"domain_path"`
	DomainRemoved time.Time `bun:"domain_removed"`
}

// withJobOwners adds a job query the columns of jobOwnerRow.
func withJobOwners(q *bun.SelectQuery, job string) *bun.SelectQuery {
	return q.ColumnExpr(job + ".id AS job_id, ja.uuid AS account_uuid, ja.name AS account_name, ju.uuid AS user_uuid").
		ColumnExpr("jd.uuid AS domain_uuid, jd.name AS domain_name, jd.path AS domain_path, jd.removed AS domain_removed").
		Join("LEFT JOIN accounts AS ja ON ja.id = " + job + ".account_id").
		Join("LEFT JOIN users AS ju ON ju.id = " + job + ".user_id").
		Join("LEFT JOIN domains AS jd ON jd.id = " + job + ".domain_id")
}

func (c *Call) jobItems(jobs []models.AsyncJob) ([]jobItem, error) {
	ids := make([]int64, 0, len(jobs))
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	owners := map[int64]*jobOwnerRow{}
	if len(ids) > 0 {
		var rows []jobOwnerRow
		if err := withJobOwners(c.S.DB.NewSelect().TableExpr("async_jobs AS j"), "j").
			Where("j.id IN (?)", bun.List(ids)).Scan(c.Ctx, &rows); err != nil {
			return nil, err
		}
		for i := range rows {
			owners[rows[i].JobID] = &rows[i]
		}
	}
	out := make([]jobItem, 0, len(jobs))
	for i := range jobs {
		out = append(out, jobItemOf(&jobs[i], owners[jobs[i].ID]))
	}
	return out, nil
}

// jobItemOf is a job's view with its owner's names (o nil: none found).
func jobItemOf(job *models.AsyncJob, o *jobOwnerRow) jobItem {
	it := jobItem{JobResponse: JobView(job)}
	if o != nil {
		it.AccountID, it.Account, it.UserID = o.AccountUUID, o.AccountName, o.UserUUID
		if o.DomainUUID != "" {
			it.DomainID, it.DomainPath = o.DomainUUID, DisplayPath(o.DomainPath)
			if !o.DomainRemoved.IsZero() {
				it.DomainPath = o.DomainName
			}
		}
	}
	return it
}

// listAsyncJobs lists the jobs the caller may see (its own account's; an
// admin's per domain with listall/domainid, as every list), newest first.
// Pending rows of the page are checked against Temporal and repaired.
func listAsyncJobs(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var jobs []models.AsyncJob
	q := c.S.DB.NewSelect().Model(&jobs).Apply(scope.Modifier("async_job.account_id", "async_job.domain_id"))
	if c.Has("startdate") {
		t, _ := ParseDate(c.Str("startdate"))
		q = q.Where("async_job.created >= ?", t)
	}
	q = c.Filtered(q, Filter{Keyword: []string{"async_job.cmd", "async_job.instance_type"}}).
		OrderExpr("async_job.created DESC, async_job.id DESC")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	for i := range jobs {
		if jobs[i].Status == models.JobPending {
			if err := c.S.repairJob(c.Ctx, &jobs[i]); err != nil {
				c.S.Log.Warn("cannot check job against Temporal", "jobid", jobs[i].UUID, "err", err)
			}
		}
	}
	items, err := c.jobItems(jobs)
	if err != nil {
		return nil, err
	}
	return List{Key: "asyncjobs", Count: n, Items: items}, nil
}

var jobFields = []Field{
	{"accountid", "string", "the account that executed the job"},
	{"userid", "string", "the user that executed the job"},
	{"cmd", "string", "the command of the job"},
	{"created", "date", "when the job was created"},
	{"completed", "date", "when the job ended"},
	{"jobid", "string", "the job id"},
	{"jobstatus", "integer", "0 pending, 1 succeeded, 2 failed"},
	{"jobprocstatus", "integer", "progress of the job"},
	{"jobresultcode", "integer", "result code of the job"},
	{"jobresulttype", "string", "type of the result"},
	{"jobresult", "responseobject", "the result: the resource, or errorcode and errortext"},
	{"jobinstancetype", "string", "type of the resource the job acts on"},
	{"jobinstanceid", "string", "id of the resource the job acts on"},
}

func queryAsyncJobResult(c *Call) (any, error) {
	job, err := c.S.LoadJob(c.Ctx, c.Str("jobid"))
	if errors.Is(err, models.ErrNotFound) {
		return nil, cserr.Param("Unable to find job by id %s", c.Str("jobid"))
	}
	if err != nil {
		return nil, err
	}
	if !c.CanSeeJob(&job.AsyncJob) {
		// The same answer as a missing job: do not reveal others' job ids.
		return nil, cserr.Param("Unable to find job by id %s", c.Str("jobid"))
	}
	return jobItemOf(&job.AsyncJob, &job.jobOwnerRow), nil
}

// CanSeeJob: a job is visible to its own account; admins see jobs of the
// accounts they administer.
func (c *Call) CanSeeJob(job *models.AsyncJob) bool {
	if c.Caller.IsRootAdmin() || job.AccountID == c.Caller.Account.ID {
		return true
	}
	if c.Caller.IsDomainAdmin() {
		var d models.Domain
		if err := c.S.DB.NewSelect().Model(&d).Column("path").Where("id = ?", job.DomainID).WhereAllWithDeleted().Scan(c.Ctx); err == nil {
			return len(d.Path) >= len(c.Caller.Domain.Path) && d.Path[:len(c.Caller.Domain.Path)] == c.Caller.Domain.Path
		}
	}
	return false
}
