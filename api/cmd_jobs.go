package api

import (
	"errors"

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
	if !c.CanSeeJob(job) {
		// The same answer as a missing job: do not reveal others' job ids.
		return nil, cserr.Param("Unable to find job by id %s", c.Str("jobid"))
	}
	return c.S.JobView(c.Ctx, job), nil
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
