package workflows

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
)

var tmplAct *activities.Templates

// Template download retries. The image store driver already retries a
// transient failure a bounded number of times (resuming where it can) and
// then reports the source Unreachable, which is final here; so are a bad
// checksum and a missing file. What Temporal retries is a lost attempt (a
// worker that died, seen by the heartbeat timeout) and unclassified errors.
var templateRetry = &temporal.RetryPolicy{
	InitialInterval:        time.Second,
	BackoffCoefficient:     2,
	MaximumInterval:        30 * time.Second,
	MaximumAttempts:        5,
	NonRetryableErrorTypes: append([]string{activities.ErrTypeChecksum, activities.ErrTypeBadSource, "Unreachable"}, nonRetryable...),
}

// withDownload sets options for template copies: long, heartbeating (a
// worker that dies mid-copy is noticed within the heartbeat timeout and the
// copy resumes on another), bounded retries.
func withDownload(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 24 * time.Hour,
		HeartbeatTimeout:    20 * time.Second,
		RetryPolicy:         templateRetry,
	})
}

// TemplateJobInput is the input of every template and ISO job.
type TemplateJobInput struct {
	TemplateID   int64
	TemplateUUID string
	ISO          bool
	// ZoneIDs limits the job to these zones (copyTemplate's destinations,
	// deleteTemplate's zone, extractTemplate's zone); empty means all.
	ZoneIDs []int64
	// ZoneUUID is the zone whose entry the job's result shows.
	ZoneUUID string
	// SourceZoneID is copyTemplate's source zone (0: any zone holding it).
	SourceZoneID int64
	// BaseURL is the API's public URL: extractTemplate's links point there,
	// and copyTemplate's destination stores download from there.
	BaseURL string
}

func (in TemplateJobInput) outcome() JobOutcome {
	key, typ := "template", "Template"
	if in.ISO {
		key, typ = "iso", "Iso"
	}
	id := in.TemplateUUID
	if in.ZoneUUID != "" {
		id += "@" + in.ZoneUUID
	}
	return JobOutcome{ResultKey: key, ResultType: typ, ResultUUID: id}
}

// RegisterTemplate downloads a registered template or ISO from its URL into
// every image store of its zones (the API made the rows, NOT_DOWNLOADED).
func RegisterTemplate(ctx workflow.Context, in TemplateJobInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := downloadTemplate(ctx, in.TemplateID, in.ZoneIDs, 0, ""); err != nil {
			return JobOutcome{}, err
		}
		return in.outcome(), nil
	})
}

// CopyTemplate copies a ready template or ISO from a store of its source
// zone into the image stores of the destination zones.
func CopyTemplate(ctx workflow.Context, in TemplateJobInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		var src activities.TemplateTarget
		err := workflow.ExecuteActivity(withInventory(ctx), tmplAct.TemplateCopySource,
			activities.TemplateZonesInput{TemplateID: in.TemplateID, ZoneIDs: []int64{in.SourceZoneID}}).Get(ctx, &src)
		if err != nil {
			return JobOutcome{}, err
		}
		err = workflow.ExecuteActivity(withInventory(ctx), tmplAct.TemplatePrepareZones,
			activities.TemplateZonesInput{TemplateID: in.TemplateID, ZoneIDs: in.ZoneIDs}).Get(ctx, nil)
		if err != nil {
			return JobOutcome{}, err
		}
		if err := downloadTemplate(ctx, in.TemplateID, in.ZoneIDs, src.RefID, in.BaseURL); err != nil {
			return JobOutcome{}, err
		}
		return in.outcome(), nil
	})
}

// downloadTemplate fills every store copy of the template (in zoneIDs, or
// all) that is not downloaded yet, in parallel, from the URL or from the
// copy sourceRef. A copy that fails is marked DOWNLOAD_ERROR with the
// reason; the job fails naming each failed store.
func downloadTemplate(ctx workflow.Context, templateID int64, zoneIDs []int64, sourceRef int64, baseURL string) error {
	var targets []activities.TemplateTarget
	err := workflow.ExecuteActivity(withInventory(ctx), tmplAct.TemplateDownloadTargets,
		activities.TemplateZonesInput{TemplateID: templateID, ZoneIDs: zoneIDs}).Get(ctx, &targets)
	if err != nil {
		return err
	}
	futures := make([]workflow.Future, len(targets))
	for i, t := range targets {
		futures[i] = workflow.ExecuteActivity(withDownload(ctx), tmplAct.TemplateDownload,
			activities.TemplateDownloadInput{RefID: t.RefID, SourceRefID: sourceRef, BaseURL: baseURL})
	}
	var failed []string
	var first error
	for i, f := range futures {
		err := f.Get(ctx, nil)
		if err == nil {
			continue
		}
		text := cserr.As(err).Text
		if temporal.IsCanceledError(err) {
			text = "download cancelled"
		}
		// Recorded even when the job is being cancelled.
		dctx, _ := workflow.NewDisconnectedContext(withInventory(ctx))
		mark := activities.TemplateDownloadFailedInput{RefID: targets[i].RefID, Error: text, Abandoned: temporal.IsCanceledError(err)}
		if merr := workflow.ExecuteActivity(dctx, tmplAct.TemplateDownloadFailed, mark).Get(dctx, nil); merr != nil && first == nil {
			first = merr
		}
		failed = append(failed, fmt.Sprintf("%s (zone %s): %s", targets[i].StoreName, targets[i].ZoneName, text))
		if first == nil && temporal.IsCanceledError(err) {
			first = err
		}
	}
	if first != nil {
		return first
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		return cserr.Internal("template download failed on %s", strings.Join(failed, "; "))
	}
	return nil
}

// DeleteTemplate removes a template's or ISO's files from the image stores
// of a zone (or all zones) and soft-deletes it once no zone holds it.
func DeleteTemplate(ctx workflow.Context, in TemplateJobInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		zin := activities.TemplateZonesInput{TemplateID: in.TemplateID, ZoneIDs: in.ZoneIDs}
		var refs []activities.TemplateTarget
		if err := workflow.ExecuteActivity(withInventory(ctx), tmplAct.TemplateMarkDestroying, zin).Get(ctx, &refs); err != nil {
			return JobOutcome{}, err
		}
		futures := make([]workflow.Future, len(refs))
		for i, r := range refs {
			futures[i] = workflow.ExecuteActivity(withDriver(ctx, 10*time.Minute), tmplAct.TemplateDeleteFile,
				activities.TemplateRefInput{RefID: r.RefID})
		}
		for _, f := range futures {
			if err := f.Get(ctx, nil); err != nil {
				return JobOutcome{}, err
			}
		}
		// An ISO's copies on primary pools go too (a template's stay: the
		// root volumes made from it are overlays on them). Runs recorded
		// before left them.
		if in.ISO && workflow.GetVersion(ctx, "iso-delete-pool-copies", workflow.DefaultVersion, 1) == 1 {
			if err := workflow.ExecuteActivity(withDriver(ctx, 10*time.Minute), vmAct.VMISODeletePoolCopies, zin).Get(ctx, nil); err != nil {
				return JobOutcome{}, err
			}
		}
		if err := workflow.ExecuteActivity(withInventory(ctx), tmplAct.TemplateFinishDelete, zin).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{}, nil
	})
}

// ExtractTemplate checks that a ready copy of the template is stored in the
// zone and answers a signed, expiring download link to it.
func ExtractTemplate(ctx workflow.Context, in TemplateJobInput) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		var ref activities.TemplateTarget
		err := workflow.ExecuteActivity(withDriver(ctx, 2*time.Minute), tmplAct.TemplateExtractCheck,
			activities.TemplateZonesInput{TemplateID: in.TemplateID, ZoneIDs: in.ZoneIDs}).Get(ctx, &ref)
		if err != nil {
			return JobOutcome{}, err
		}
		expires := workflow.Now(ctx).Add(activities.ExtractLinkTTL).Unix()
		out := in.outcome()
		out.ResultType = "TemplateExtract"
		out.ResultUUID = fmt.Sprintf("%s|%d|%d|%s", in.TemplateUUID, ref.RefID, expires, in.BaseURL)
		return out, nil
	})
}
