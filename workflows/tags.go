package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

var tagsAct *activities.Tags

// CreateTagsInput is a createTags job: the resolved tags.
type CreateTagsInput = activities.TagCreateInput

// CreateTags puts tags on resources. CloudStack answers createTags as an
// async job; the work is one inventory transaction.
func CreateTags(ctx workflow.Context, in CreateTagsInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		err := workflow.ExecuteActivity(withInventory(ctx), tagsAct.TagCreate, in).Get(ctx, nil)
		return JobOutcome{}, err
	})
}

// DeleteTagsInput is a deleteTags job: the tag rows to remove.
type DeleteTagsInput = activities.TagDeleteInput

// DeleteTags removes tags from resources.
func DeleteTags(ctx workflow.Context, in DeleteTagsInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		err := workflow.ExecuteActivity(withInventory(ctx), tagsAct.TagDelete, in).Get(ctx, nil)
		return JobOutcome{}, err
	})
}
