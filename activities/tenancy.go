package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Tenancy holds the steps of the domain, account and user jobs.
type Tenancy struct{ Deps }

// Actor is who started a job; the events a job writes name it.
type Actor struct {
	UserID    int64
	AccountID int64
	DomainID  int64
}

// EventInput is one audit event (listEvents).
type EventInput struct {
	Actor
	Type         string // e.g. ACCOUNT.DELETE
	Level        string // INFO (default), WARN, ERROR
	State        string // Completed (default), Started, Scheduled
	Description  string
	ResourceType string
	ResourceUUID string
	JobUUID      string
	// UUID of the event; random when empty. Activities derive it from their
	// run and activity id so that a retried step does not write it twice.
	UUID string
}

// WriteEvent inserts an event unless one with its UUID exists. It is a plain
// function (not an activity) so that API handlers write events in their own
// transaction.
func WriteEvent(ctx context.Context, db bun.IDB, in EventInput) error {
	if in.UUID == "" {
		in.UUID = models.NewUUID()
	} else if ok, err := db.NewSelect().Model((*models.Event)(nil)).Where("uuid = ?", in.UUID).Exists(ctx); err != nil {
		return err
	} else if ok {
		return nil
	}
	if in.Level == "" {
		in.Level = "INFO"
	}
	if in.State == "" {
		in.State = "Completed"
	}
	// Scheduled runs' workflow IDs (schedule ID + start time) can pass the
	// column's 64 characters with a long task queue: the event matters more.
	if len(in.JobUUID) > 64 {
		in.JobUUID = in.JobUUID[:64]
	}
	ev := &models.Event{
		UUID: in.UUID, Type: in.Type, Level: in.Level, State: in.State, Description: in.Description,
		UserID: in.UserID, AccountID: in.AccountID, DomainID: in.DomainID,
		ResourceType: in.ResourceType, ResourceUUID: in.ResourceUUID, JobUUID: in.JobUUID, Created: models.Now(),
	}
	_, err := db.NewInsert().Model(ev).Exec(ctx)
	return err
}

// activityEvent fills the event's UUID and job from the running activity, so
// that retries of the step write one event.
func activityEvent(ctx context.Context, in EventInput) EventInput {
	if !activity.IsActivity(ctx) {
		return in
	}
	info := activity.GetInfo(ctx)
	if in.UUID == "" {
		key := info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + info.ActivityID + "/" + in.Type
		in.UUID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(key)).String()
	}
	if in.JobUUID == "" {
		in.JobUUID = info.WorkflowExecution.ID
	}
	return in
}

// EventRecord writes an event from a workflow.
func (a *Tenancy) EventRecord(ctx context.Context, in EventInput) error {
	return WriteEvent(ctx, a.DB, activityEvent(ctx, in))
}

// fail is a non-retryable failure with a CloudStack code, for outcomes that
// retrying cannot change (a refusal).
func fail(code int, format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), "CS"+strconv.Itoa(code), nil)
}

func subtree(q *bun.SelectQuery, col, path string) *bun.SelectQuery {
	return q.Where("SUBSTR(?, 1, ?) = ?", bun.Ident(col), utf8.RuneCountInString(path), path)
}

// ---- accounts ----

// AccountDeleteInput names the account a deleteAccount job removes.
type AccountDeleteInput struct {
	AccountUUID string
}

// AccountDeleteState is what AccountDeleteBegin found.
type AccountDeleteState struct {
	AccountID int64
	Name      string
	DomainID  int64
	// Removed: the account is already gone (a rerun); nothing is left to do.
	Removed bool
}

// AccountDeleteBegin checks that the account may be deleted and disables it,
// so that its users can do nothing more while its resources go. It refuses
// the system and admin accounts.
func (a *Tenancy) AccountDeleteBegin(ctx context.Context, in AccountDeleteInput) (AccountDeleteState, error) {
	var acct models.Account
	err := a.DB.NewSelect().Model(&acct).Where("uuid = ?", in.AccountUUID).WhereAllWithDeleted().Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return AccountDeleteState{}, fail(cserr.ParamError, "Unable to find account by id %s", in.AccountUUID)
	}
	if err != nil {
		return AccountDeleteState{}, err
	}
	st := AccountDeleteState{AccountID: acct.ID, Name: acct.Name, DomainID: acct.DomainID, Removed: !acct.Removed.IsZero()}
	if acct.UUID == models.SystemAccountUUID || acct.UUID == models.AdminAccountUUID {
		return st, fail(cserr.AccountError, "Account %s is a system account; deleting it is not allowed", acct.Name)
	}
	if st.Removed {
		return st, nil
	}
	_, err = a.DB.NewUpdate().Model((*models.Account)(nil)).Set("state = ?", "disabled").Where("id = ?", acct.ID).Exec(ctx)
	return st, err
}

// AccountCleanupInput names the account whose resources a cleanup step
// removes.
type AccountCleanupInput struct {
	AccountID int64
}

// AccountDeleteSessions ends the login sessions of the account's users.
func (a *Tenancy) AccountDeleteSessions(ctx context.Context, in AccountCleanupInput) (int64, error) {
	users := a.DB.NewSelect().Model((*models.User)(nil)).Column("id").Where("account_id = ?", in.AccountID).WhereAllWithDeleted()
	res, err := a.DB.NewDelete().Model((*models.Session)(nil)).Where("user_id IN (?)", users).Exec(ctx)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// AccountDeleteKeys drops the API keys and secrets of the account's users.
func (a *Tenancy) AccountDeleteKeys(ctx context.Context, in AccountCleanupInput) (int64, error) {
	res, err := a.DB.NewUpdate().Model((*models.User)(nil)).
		Set("api_key = NULL").Set("secret_key_cipher = ''").
		Where("account_id = ?", in.AccountID).Where("api_key IS NOT NULL OR secret_key_cipher <> ''").
		WhereAllWithDeleted().Exec(ctx)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// AccountDeleteUsers removes the account's users.
func (a *Tenancy) AccountDeleteUsers(ctx context.Context, in AccountCleanupInput) (int64, error) {
	res, err := a.DB.NewDelete().Model((*models.User)(nil)).Where("account_id = ?", in.AccountID).Exec(ctx)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// AccountDeleteFinishInput ends a deleteAccount job.
type AccountDeleteFinishInput struct {
	AccountID   int64
	AccountUUID string
	Name        string
	Actor       Actor
}

// AccountDeleteFinish marks the account removed once everything it owned is
// gone, and records ACCOUNT.DELETE.
func (a *Tenancy) AccountDeleteFinish(ctx context.Context, in AccountDeleteFinishInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*models.Account)(nil)).
			Set("removed = ?", models.Now()).Set("needs_cleanup = ?", false).
			Where("id = ?", in.AccountID).Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "ACCOUNT.DELETE", ResourceType: "Account", ResourceUUID: in.AccountUUID,
			Description: "Account " + in.Name + " deleted",
		}))
	})
}

// AccountDeleteFailedInput records a deleteAccount job that failed part-way.
type AccountDeleteFailedInput struct {
	AccountID   int64
	AccountUUID string
	Reason      string
	Actor       Actor
}

// AccountDeleteFailed is the compensation of a failed deletion: the account
// stays disabled and is flagged as needing cleanup (iscleanuprequired), so
// that an operator sees it and deleting it again resumes where it stopped.
func (a *Tenancy) AccountDeleteFailed(ctx context.Context, in AccountDeleteFailedInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*models.Account)(nil)).Set("needs_cleanup = ?", true).
			Where("id = ?", in.AccountID).Exec(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "ACCOUNT.DELETE", Level: "ERROR", ResourceType: "Account", ResourceUUID: in.AccountUUID,
			Description: "Deleting account failed; it is disabled and needs cleanup: " + in.Reason,
		}))
	})
}

// AccountStateInput moves an account to a state (disableAccount).
type AccountStateInput struct {
	AccountUUID string
	State       string // enabled, disabled, locked
	EventType   string
	Actor       Actor
}

// AccountSetState sets the account's state and records the event; setting
// the state it already has succeeds.
func (a *Tenancy) AccountSetState(ctx context.Context, in AccountStateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var acct models.Account
		if err := tx.NewSelect().Model(&acct).Where("uuid = ?", in.AccountUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fail(cserr.ParamError, "Unable to find account by id %s", in.AccountUUID)
			}
			return err
		}
		if acct.State != in.State {
			if err := models.Transition(ctx, tx, (*models.Account)(nil), acct.ID, in.State, []string{acct.State}, nil); err != nil {
				return err
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: in.EventType, ResourceType: "Account", ResourceUUID: acct.UUID,
			Description: "Account " + acct.Name + " " + in.State,
		}))
	})
}

// UserStateInput moves a user to a state (disableUser).
type UserStateInput struct {
	UserUUID  string
	State     string // enabled, disabled, locked
	EventType string
	Actor     Actor
}

// UserSetState sets the user's state and records the event.
func (a *Tenancy) UserSetState(ctx context.Context, in UserStateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var u models.User
		if err := tx.NewSelect().Model(&u).Where("uuid = ?", in.UserUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fail(cserr.ParamError, "Unable to find user by id %s", in.UserUUID)
			}
			return err
		}
		if u.State != in.State {
			if err := models.Transition(ctx, tx, (*models.User)(nil), u.ID, in.State, []string{u.State}, nil); err != nil {
				return err
			}
		}
		if in.State != "enabled" {
			// A disabled user's sessions end.
			if _, err := tx.NewDelete().Model((*models.Session)(nil)).Where("user_id = ?", u.ID).Exec(ctx); err != nil {
				return err
			}
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: in.EventType, ResourceType: "User", ResourceUUID: u.UUID,
			Description: "User " + u.Username + " " + in.State,
		}))
	})
}

// ---- domains ----

// DomainDeleteInput names the domain a deleteDomain job removes.
type DomainDeleteInput struct {
	DomainUUID string
	Cleanup    bool
}

// DomainDeletePlan is what DomainDeleteBegin found.
type DomainDeletePlan struct {
	DomainID int64
	Name     string
	Path     string
	// Accounts to delete first (cleanup=true), as UUIDs.
	Accounts []string
	// Removed: the domain is already gone (a rerun).
	Removed bool
}

// DomainDeleteBegin refuses (536) when the domain or a subdomain holds
// accounts unless cleanup is asked for; otherwise it marks the subtree
// Inactive (no new accounts or subdomains go there) and returns the accounts
// to delete.
func (a *Tenancy) DomainDeleteBegin(ctx context.Context, in DomainDeleteInput) (DomainDeletePlan, error) {
	var d models.Domain
	err := a.DB.NewSelect().Model(&d).Where("uuid = ?", in.DomainUUID).WhereAllWithDeleted().Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return DomainDeletePlan{}, fail(cserr.ParamError, "Unable to find domain by id %s", in.DomainUUID)
	}
	if err != nil {
		return DomainDeletePlan{}, err
	}
	plan := DomainDeletePlan{DomainID: d.ID, Name: d.Name, Path: d.Path, Removed: !d.Removed.IsZero()}
	if plan.Removed {
		return plan, nil
	}
	if d.ParentID == nil {
		return plan, fail(cserr.ParamError, "The ROOT domain cannot be deleted")
	}
	var accts []models.Account
	if err := a.DB.NewSelect().Model(&accts).Column("uuid", "name").
		Where("domain_id IN (?)", subtree(a.DB.NewSelect().Model((*models.Domain)(nil)).Column("id"), "path", d.Path)).
		Order("id").Scan(ctx); err != nil {
		return plan, err
	}
	if len(accts) > 0 && !in.Cleanup {
		names := ""
		for i, ac := range accts {
			if i == 5 {
				names += ", ..."
				break
			}
			if i > 0 {
				names += ", "
			}
			names += ac.Name
		}
		return plan, fail(cserr.ResourceInUse, "Domain %s cannot be deleted: it or its subdomains still hold %d account(s) (%s); delete them first or pass cleanup=true",
			d.Name, len(accts), names)
	}
	for _, ac := range accts {
		plan.Accounts = append(plan.Accounts, ac.UUID)
	}
	q := a.DB.NewUpdate().Model((*models.Domain)(nil)).Set("state = ?", "Inactive").
		Where("SUBSTR(path, 1, ?) = ?", utf8.RuneCountInString(d.Path), d.Path)
	if _, err := q.Exec(ctx); err != nil {
		return plan, err
	}
	return plan, nil
}

// DomainDeleteFinishInput ends a deleteDomain job.
type DomainDeleteFinishInput struct {
	DomainUUID string
	Path       string
	Actor      Actor
}

// DomainDeleteFinish removes the domain and its subdomains, deepest first,
// once no account is left in them (536 otherwise). A removed domain's path is
// renamed out of the way so that a new domain may take its name.
func (a *Tenancy) DomainDeleteFinish(ctx context.Context, in DomainDeleteFinishInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		ids := subtree(tx.NewSelect().Model((*models.Domain)(nil)).Column("id"), "path", in.Path)
		n, err := tx.NewSelect().Model((*models.Account)(nil)).Where("domain_id IN (?)", ids).Count(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return fail(cserr.ResourceInUse, "Domain cannot be deleted: %d account(s) were created in it or its subdomains meanwhile", n)
		}
		var ds []models.Domain
		if err := subtree(tx.NewSelect().Model(&ds), "path", in.Path).Order("level DESC").Scan(ctx); err != nil {
			return err
		}
		now := models.Now()
		for _, d := range ds {
			if _, err := tx.NewUpdate().Model((*models.Domain)(nil)).
				Set("path = ?", "~"+d.UUID+":"+d.Path).Set("state = ?", "Inactive").Set("removed = ?", now).
				Where("id = ?", d.ID).Exec(ctx); err != nil {
				return err
			}
			if err := WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
				Actor: in.Actor, Type: "DOMAIN.DELETE", ResourceType: "Domain", ResourceUUID: d.UUID,
				Description: "Domain ROOT" + d.Path[:len(d.Path)-1] + " deleted",
			})); err != nil {
				return err
			}
		}
		return nil
	})
}

// DomainDeleteAbortInput undoes DomainDeleteBegin.
type DomainDeleteAbortInput struct {
	Path string
}

// DomainDeleteAbort is the compensation of a failed deleteDomain: the
// domains still there become Active again.
func (a *Tenancy) DomainDeleteAbort(ctx context.Context, in DomainDeleteAbortInput) error {
	_, err := a.DB.NewUpdate().Model((*models.Domain)(nil)).Set("state = ?", "Active").
		Where("state = ?", "Inactive").
		Where("SUBSTR(path, 1, ?) = ?", utf8.RuneCountInString(in.Path), in.Path).Exec(ctx)
	return err
}
