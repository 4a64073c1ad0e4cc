package api

import (
	"context"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
)

// RecordEvent writes one audit event (listEvents). Failing to record an
// event never fails the action it describes; it is logged instead.
func RecordEvent(ctx context.Context, db bun.IDB, e *models.Event) error {
	if e.UUID == "" {
		e.UUID = models.NewUUID()
	}
	if e.Level == "" {
		e.Level = "INFO"
	}
	if e.State == "" {
		e.State = "Completed"
	}
	if e.Created.IsZero() {
		e.Created = models.Now()
	}
	_, err := db.NewInsert().Model(e).Exec(ctx)
	return err
}

// Event records a completed action of this call's caller.
func (c *Call) Event(typ, resourceType, resourceUUID, description string) {
	e := &models.Event{Type: typ, ResourceType: resourceType, ResourceUUID: resourceUUID, Description: description}
	if c.Caller != nil {
		e.UserID, e.AccountID, e.DomainID = c.Caller.User.ID, c.Caller.Account.ID, c.Caller.Domain.ID
	}
	if err := RecordEvent(c.Ctx, c.S.DB, e); err != nil {
		c.S.Log.Warn("cannot record event", "type", typ, "err", err)
	}
}
