package activities

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Tags holds the steps of the createTags and deleteTags jobs.
type Tags struct{ Deps }

// TagRow is one tag to put on one resource, resolved and checked by the API.
type TagRow struct {
	Key          string
	Value        string
	Customer     string
	ResourceType string // canonical: UserVm, Volume, Template...
	ResourceUUID string
	ResourceID   int64
	AccountID    int64 // the resource's owner
	DomainID     int64
}

// TagCreateInput is a createTags job.
type TagCreateInput struct {
	Tags  []TagRow
	Actor Actor
}

// TagCreate inserts the tags in one transaction. A tag already there with
// the same value is success (a retried step); with another value it is a
// 431.
func (a *Tags) TagCreate(ctx context.Context, in TagCreateInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var keys []string
		for _, t := range in.Tags {
			var have models.ResourceTag
			err := tx.NewSelect().Model(&have).
				Where("resource_type = ? AND resource_uuid = ? AND tag_key = ?", t.ResourceType, t.ResourceUUID, t.Key).
				Limit(1).Scan(ctx)
			switch {
			case err == nil && have.Value == t.Value:
				continue
			case err == nil:
				return fail(cserr.ParamError, "A tag with key %s already exists on %s %s", t.Key, t.ResourceType, t.ResourceUUID)
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			row := &models.ResourceTag{
				UUID: models.NewUUID(), Key: t.Key, Value: t.Value, Customer: t.Customer,
				ResourceID: t.ResourceID, ResourceUUID: t.ResourceUUID, ResourceType: t.ResourceType,
				AccountID: t.AccountID, DomainID: t.DomainID, Created: models.Now(),
			}
			if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
				return err
			}
			keys = append(keys, t.Key)
		}
		if len(in.Tags) == 0 {
			return nil
		}
		first := in.Tags[0]
		return WriteEvent(ctx, tx, activityEvent(ctx, EventInput{
			Actor: in.Actor, Type: "CREATE_TAGS", ResourceType: first.ResourceType, ResourceUUID: first.ResourceUUID,
			Description: "Created tags " + strings.Join(tagUnique(keys), ", ") + " on " + tagResources(in.Tags),
		}))
	})
}

// TagDeleteInput is a deleteTags job: the tag rows the API matched.
type TagDeleteInput struct {
	TagIDs       []int64
	ResourceType string
	ResourceIDs  []string // UUIDs, for the event
	Actor        Actor
}

// TagDelete removes the tags; ones already gone are success.
func (a *Tags) TagDelete(ctx context.Context, in TagDeleteInput) error {
	if len(in.TagIDs) == 0 {
		return nil
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewDelete().Model((*models.ResourceTag)(nil)).Where("id IN (?)", bun.In(in.TagIDs)).Exec(ctx); err != nil {
			return err
		}
		ev := EventInput{Actor: in.Actor, Type: "DELETE_TAGS", ResourceType: in.ResourceType,
			Description: "Deleted tags of " + in.ResourceType + " " + strings.Join(in.ResourceIDs, ", ")}
		if len(in.ResourceIDs) > 0 {
			ev.ResourceUUID = in.ResourceIDs[0]
		}
		return WriteEvent(ctx, tx, activityEvent(ctx, ev))
	})
}

func tagResources(tags []TagRow) string {
	var ids []string
	for _, t := range tags {
		ids = append(ids, t.ResourceUUID)
	}
	return tags[0].ResourceType + " " + strings.Join(tagUnique(ids), ", ")
}

func tagUnique(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
