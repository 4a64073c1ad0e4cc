package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// RegisterVCenterTemplate registers a template whose source is a template
// or VM in a vCenter of its zones (a vsphere:// URL): it checks the source
// there and marks the template ready; nothing is downloaded (the API made
// the rows and removes them again when this fails).
func RegisterVCenterTemplate(ctx workflow.Context, in TemplateJobInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		err := workflow.ExecuteActivity(withDriver(ctx, 2*time.Minute), tmplAct.TemplateVCenterVerify,
			activities.TemplateVCenterInput{TemplateID: in.TemplateID}).Get(ctx, nil)
		if err != nil {
			return JobOutcome{}, err
		}
		return in.outcome(), nil
	})
}
