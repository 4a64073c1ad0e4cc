package activities

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
)

// Error types of template activities that retrying cannot fix.
const (
	ErrTypeChecksum  = "ChecksumMismatch"
	ErrTypeBadSource = "BadSource"
)

// ExtractLinkTTL is how long an extractTemplate link works (CloudStack's
// extract.url.expiration.interval default).
const ExtractLinkTTL = 4 * time.Hour

// Templates holds the steps of template and ISO jobs: moves of their store
// copies (template_store_refs) and calls to image store drivers.
type Templates struct{ Deps }

// TemplateZonesInput names a template and, optionally, the zones to act in
// (empty: every zone).
type TemplateZonesInput struct {
	TemplateID int64
	ZoneIDs    []int64
}

// TemplateTarget is one copy of a template on an image store.
type TemplateTarget struct {
	RefID     int64
	StoreID   int64
	StoreName string
	ZoneName  string
}

// TemplateRefInput names one store copy.
type TemplateRefInput struct {
	RefID int64
}

// TemplateDownloadInput fills one store copy: from the template's URL, or
// from SourceRefID's copy (copyTemplate).
type TemplateDownloadInput struct {
	RefID       int64
	SourceRefID int64
	// BaseURL is the API server's public URL, which serves SourceRefID.
	BaseURL string
}

// TemplateDownloadFailedInput records why a copy could not be filled.
type TemplateDownloadFailedInput struct {
	RefID int64
	Error string
	// Abandoned: the job was cancelled rather than the download failing.
	Abandoned bool
}

// DownloadToken seals a store copy's id and an expiry with the server key:
// the path element of the links extractTemplate answers and copyTemplate
// downloads from (/client/download/<token>), URL-safe.
func DownloadToken(box *secrets.Box, refID int64, expires time.Time) (string, error) {
	if box == nil {
		return "", errors.New("no server key to sign download links with")
	}
	sealed, err := box.Encrypt(fmt.Sprintf("template-copy|%d|%d", refID, expires.Unix()))
	if err != nil {
		return "", err
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// ParseDownloadToken opens a DownloadToken; a forged or altered token fails.
func ParseDownloadToken(box *secrets.Box, token string) (refID int64, expires time.Time, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || box == nil {
		return 0, time.Time{}, errors.New("malformed download token")
	}
	plain, err := box.Decrypt(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return 0, time.Time{}, errors.New("invalid download token")
	}
	parts := strings.Split(plain, "|")
	if len(parts) != 3 || parts[0] != "template-copy" {
		return 0, time.Time{}, errors.New("invalid download token")
	}
	refID, err1 := strconv.ParseInt(parts[1], 10, 64)
	exp, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, errors.New("invalid download token")
	}
	return refID, time.Unix(exp, 0), nil
}

// DownloadPath is the API server's route for download links.
const DownloadPath = "/client/download/"

// copySourceURL is a short-lived link to a downloaded copy, served by the
// API server at baseURL, for another store's driver to download from.
func (a *Templates) copySourceURL(refID int64, baseURL string) (string, error) {
	if baseURL == "" {
		return "", temporal.NewNonRetryableApplicationError("no public API URL to copy templates through (set NIMBUS_PUBLIC_URL)", ErrTypeBadSource, nil)
	}
	token, err := DownloadToken(a.Secrets, refID, time.Now().Add(ExtractLinkTTL))
	if err != nil {
		return "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadSource, nil)
	}
	return strings.TrimRight(baseURL, "/") + DownloadPath + token, nil
}

// TemplateInstallPath is where a template lives on an image store:
// CloudStack's template/tmpl/<account>/<template>/<uuid>.<ext>.
func TemplateInstallPath(t *models.Template) string {
	ext := strings.ToLower(t.Format)
	if ext == "" {
		ext = "img"
	}
	return path.Join("template", "tmpl", strconv.FormatInt(t.AccountID, 10), strconv.FormatInt(t.ID, 10), t.UUID+"."+ext)
}

// refsInZones narrows a store-copy query to zones (and region-wide stores).
func refsInZones(q *bun.SelectQuery, zoneIDs []int64) *bun.SelectQuery {
	if len(zoneIDs) == 0 {
		return q
	}
	return q.Where("(ref.zone_id IN (?) OR ref.zone_id IS NULL)", bun.In(zoneIDs))
}

type refRow struct {
	models.TemplateStoreRef `bun:",extend"`
	StoreName               string `bun:"store_name"`
	ZoneName                string `bun:"zone_name"`
}

func (a *Templates) targets(ctx context.Context, q func(*bun.SelectQuery) *bun.SelectQuery) ([]TemplateTarget, error) {
	var rows []refRow
	sq := a.DB.NewSelect().Model(&rows).
		ColumnExpr("ref.*").ColumnExpr("st.name AS store_name").ColumnExpr("COALESCE(z.name, 'region') AS zone_name").
		ModelTableExpr("template_store_refs AS ref").
		Join("JOIN image_stores AS st ON st.id = ref.store_id").
		Join("LEFT JOIN zones AS z ON z.id = ref.zone_id").
		Order("ref.id ASC")
	if err := q(sq).Scan(ctx); err != nil {
		return nil, err
	}
	out := make([]TemplateTarget, len(rows))
	for i, r := range rows {
		out[i] = TemplateTarget{RefID: r.ID, StoreID: r.StoreID, StoreName: r.StoreName, ZoneName: r.ZoneName}
	}
	return out, nil
}

// TemplateDownloadTargets lists the copies of a template still to fill.
func (a *Templates) TemplateDownloadTargets(ctx context.Context, in TemplateZonesInput) ([]TemplateTarget, error) {
	return a.targets(ctx, func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("ref.template_id = ? AND ref.destroyed = ? AND ref.download_state <> ?", in.TemplateID, false, models.DownloadDownloaded)
		return refsInZones(q, in.ZoneIDs)
	})
}

// TemplateCopySource finds a downloaded copy to copy from, in the zone
// given (or any).
func (a *Templates) TemplateCopySource(ctx context.Context, in TemplateZonesInput) (TemplateTarget, error) {
	zones := in.ZoneIDs
	if len(zones) == 1 && zones[0] == 0 {
		zones = nil
	}
	ts, err := a.targets(ctx, func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("ref.template_id = ? AND ref.destroyed = ? AND ref.download_state = ?", in.TemplateID, false, models.DownloadDownloaded)
		return refsInZones(q, zones)
	})
	if err != nil {
		return TemplateTarget{}, err
	}
	if len(ts) == 0 {
		return TemplateTarget{}, cserr.Temporal(cserr.Param("the template is not downloaded in the source zone"))
	}
	return ts[0], nil
}

// TemplatePrepareZones makes the template present in zones: a zone ref per
// zone and a NOT_DOWNLOADED copy per image store of the zone, unless there.
func (a *Templates) TemplatePrepareZones(ctx context.Context, in TemplateZonesInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var t models.Template
		if err := tx.NewSelect().Model(&t).Where("id = ?", in.TemplateID).Scan(ctx); err != nil {
			return cserr.Temporal(cserr.Param("the template was deleted"))
		}
		now := models.Now()
		for _, zid := range in.ZoneIDs {
			n, err := tx.NewSelect().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ? AND zone_id = ?", t.ID, zid).Count(ctx)
			if err != nil {
				return err
			}
			if n == 0 {
				if _, err := tx.NewInsert().Model(&models.TemplateZoneRef{ZoneID: zid, TemplateID: t.ID, Created: now}).Exec(ctx); err != nil {
					return err
				}
			}
			var stores []models.ImageStore
			if err := tx.NewSelect().Model(&stores).Where("role = ? AND readonly = ?", "Image", false).
				Where("(zone_id = ? OR zone_id IS NULL)", zid).Order("id ASC").Scan(ctx); err != nil {
				return err
			}
			for _, st := range stores {
				n, err := tx.NewSelect().Model((*models.TemplateStoreRef)(nil)).
					Where("template_id = ? AND store_id = ? AND destroyed = ?", t.ID, st.ID, false).Count(ctx)
				if err != nil {
					return err
				}
				if n > 0 {
					continue
				}
				ref := &models.TemplateStoreRef{
					StoreID: st.ID, TemplateID: t.ID, ZoneID: st.ZoneID, StoreRole: st.Role, URL: t.URL,
					DownloadState: models.DownloadNotDownloaded, State: models.ObjectAllocated, Created: now, LastUpdated: now,
				}
				if info := activityInfo(ctx); info != nil {
					ref.JobID = info.WorkflowExecution.ID
				}
				if _, err := tx.NewInsert().Model(ref).Exec(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func activityInfo(ctx context.Context) *activity.Info {
	if !activity.IsActivity(ctx) {
		return nil
	}
	info := activity.GetInfo(ctx)
	return &info
}

// storeOf loads an image store and its driver descriptor.
func (a *Templates) storeOf(ctx context.Context, id int64) (*models.ImageStore, storage.ImageStore, error) {
	var st models.ImageStore
	err := a.DB.NewSelect().Model(&st).Where("id = ?", id).WhereAllWithDeleted().Scan(ctx)
	if err != nil {
		return nil, storage.ImageStore{}, err
	}
	var details []models.ImageStoreDetail
	if err := a.DB.NewSelect().Model(&details).Where("store_id = ?", st.ID).Scan(ctx); err != nil {
		return nil, storage.ImageStore{}, err
	}
	d := storage.ImageStore{ID: st.UUID, Name: st.Name, Provider: st.ProviderName, URL: st.URL, Details: map[string]string{}}
	for _, kv := range details {
		v := kv.Value
		if !kv.Display && v != "" { // secret settings are stored sealed with the server key
			if a.Secrets == nil {
				return nil, d, errors.New("worker has no server key to decrypt image store credentials")
			}
			if v, err = a.Secrets.Decrypt(v); err != nil {
				return nil, d, temporal.NewNonRetryableApplicationError("cannot decrypt the image store's "+kv.Name+": "+err.Error(), "Invalid", nil)
			}
		}
		d.Details[kv.Name] = v
	}
	return &st, d, nil
}

// TemplateDownload fills one store copy: it marks it in progress, has the
// store's driver download (or copy) the image while heartbeating and
// recording progress, and marks it DOWNLOADED. A retried attempt starts over
// on the same path (the driver leaves nothing behind a failed download and
// takes a complete image already there as done), so a copy is never stored
// twice. A copy deleted meanwhile has its file removed again.
func (a *Templates) TemplateDownload(ctx context.Context, in TemplateDownloadInput) error {
	var ref models.TemplateStoreRef
	if err := a.DB.NewSelect().Model(&ref).Where("id = ?", in.RefID).Scan(ctx); err != nil {
		return err
	}
	if ref.DownloadState == models.DownloadDownloaded && !ref.Destroyed {
		return nil
	}
	if ref.Destroyed {
		return temporal.NewNonRetryableApplicationError("the template was deleted while downloading", ErrTypeBadSource, nil)
	}
	var t models.Template
	if err := a.DB.NewSelect().Model(&t).Where("id = ?", ref.TemplateID).WhereAllWithDeleted().Scan(ctx); err != nil {
		return err
	}
	_, desc, err := a.storeOf(ctx, ref.StoreID)
	if err != nil {
		return err
	}
	drv, err := a.ImageStores(desc.Provider)
	if err != nil {
		return storeFailure(err)
	}
	req := storage.DownloadRequest{URL: t.URL, Path: TemplateInstallPath(&t), Checksum: t.Checksum, Format: t.Format}
	if in.SourceRefID != 0 {
		if req.URL, err = a.copySourceURL(in.SourceRefID, in.BaseURL); err != nil {
			return err
		}
	}
	res, err := a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).
		Set("download_state = ?", models.DownloadInProgress).Set("state = ?", models.ObjectCreating).
		Set("install_path = ?", req.Path).Set("error_str = ''").Set("last_updated = ?", models.Now()).
		Where("id = ? AND destroyed = ? AND download_state <> ?", ref.ID, false, models.DownloadDownloaded).Exec(ctx)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return a.TemplateDownload(ctx, in) // moved meanwhile: decide again
	}
	prog := newProgressRecorder(ctx, a.DB, ref.ID)
	img, err := heartbeatDuring(ctx, prog.done, func(ctx context.Context) (storage.Image, error) {
		return drv.DownloadTemplate(ctx, desc, req, prog.report)
	})
	if err != nil {
		_, _ = a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("error_str = ?", clipText(err.Error(), 1000)).
			Where("id = ? AND download_state = ?", ref.ID, models.DownloadInProgress).Exec(context.WithoutCancel(ctx))
		return downloadFailure(err)
	}
	now := models.Now()
	size := img.SizeBytes // a template's size is the disk a guest sees: a qcow2's virtual size
	if img.VirtualSizeBytes > 0 {
		size = img.VirtualSizeBytes
	}
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.TemplateStoreRef)(nil)).
			Set("download_state = ?", models.DownloadDownloaded).Set("download_pct = 100").
			Set("state = ?", models.ObjectReady).Set("install_path = ?", img.Path).
			Set("size = ?", size).Set("physical_size = ?", img.SizeBytes).
			Set("error_str = ''").Set("last_updated = ?", now).
			Where("id = ? AND destroyed = ?", ref.ID, false).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errDeletedMeanwhile
		}
		_, err = tx.NewUpdate().Model((*models.Template)(nil)).Set("size = ?", size).
			Where("id = ? AND (size IS NULL OR size = 0)", t.ID).WhereAllWithDeleted().Exec(ctx)
		return err
	})
	if errors.Is(err, errDeletedMeanwhile) {
		// deleteTemplate marked the copy destroyed while we wrote it.
		if derr := drv.Delete(ctx, desc, img.Path); derr != nil {
			return storeFailure(derr)
		}
		return temporal.NewNonRetryableApplicationError("the template was deleted while downloading", ErrTypeBadSource, nil)
	}
	return err
}

var errDeletedMeanwhile = errors.New("copy deleted meanwhile")

// heartbeatDuring runs a driver call while heartbeating every few seconds,
// so that the attempt stays alive while the call does, and a worker that
// dies mid-call is noticed within the heartbeat timeout.
func heartbeatDuring[T any](ctx context.Context, details func() int64, fn func(context.Context) (T, error)) (T, error) {
	if !activity.IsActivity(ctx) {
		return fn(ctx)
	}
	every := 3 * time.Second
	if hb := activity.GetInfo(ctx).HeartbeatTimeout; hb > 0 && hb/4 < every {
		every = hb / 4
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if details != nil {
					activity.RecordHeartbeat(ctx, details())
				} else {
					activity.RecordHeartbeat(ctx)
				}
			}
		}
	}()
	return fn(ctx)
}

// storeFailure maps an image store driver error for Temporal: not found,
// not supported, invalid and capacity are final; unreachable and
// unclassified failures are retried within the bounded policy.
func storeFailure(err error) error {
	if err == nil {
		return nil
	}
	typ := hypervisor.ErrorType(err)
	if typ == "" {
		typ = "StorageError"
	}
	if !hypervisor.Retryable(err) {
		return temporal.NewNonRetryableApplicationError(err.Error(), typ, nil)
	}
	return temporal.NewApplicationError(err.Error(), typ)
}

// downloadFailure maps a download error: a checksum mismatch and a source
// that answers "no such file" are final; an unreachable source is retried
// within the workflow's bounded policy.
func downloadFailure(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(strings.ToLower(msg), "checksum"):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeChecksum, nil)
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrInvalid):
		return temporal.NewNonRetryableApplicationError(msg, ErrTypeBadSource, nil)
	default:
		return storeFailure(err)
	}
}

func clipText(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// progressRecorder heartbeats a download's progress (bytes done: what a
// retried attempt could resume from) and keeps the copy's download_pct
// current, writing at most once a second.
type progressRecorder struct {
	ctx   context.Context
	db    bun.IDB
	refID int64

	mu      sync.Mutex
	bytes   int64
	lastPct int
	lastAt  time.Time
}

func newProgressRecorder(ctx context.Context, db bun.IDB, refID int64) *progressRecorder {
	return &progressRecorder{ctx: ctx, db: db, refID: refID, lastPct: -1}
}

func (p *progressRecorder) done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

func (p *progressRecorder) report(pr storage.Progress) {
	if activity.IsActivity(p.ctx) {
		activity.RecordHeartbeat(p.ctx, pr.Done)
	}
	pct := pr.Percent()
	p.mu.Lock()
	p.bytes = pr.Done
	if pct < 0 || pct == p.lastPct || (time.Since(p.lastAt) < time.Second && pct < 100) {
		p.mu.Unlock()
		return
	}
	p.lastPct, p.lastAt = pct, time.Now()
	p.mu.Unlock()
	_, _ = p.db.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("download_pct = ?", pct).
		Set("last_updated = ?", models.Now()).
		Where("id = ? AND download_state = ?", p.refID, models.DownloadInProgress).Exec(p.ctx)
}

// TemplateDownloadFailed marks a copy DOWNLOAD_ERROR (ABANDONED when its job
// was cancelled) with the reason, unless it is downloaded or deleted.
func (a *Templates) TemplateDownloadFailed(ctx context.Context, in TemplateDownloadFailedInput) error {
	state := models.DownloadError
	if in.Abandoned {
		state = models.DownloadAbandoned
	}
	_, err := a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).
		Set("download_state = ?", state).Set("state = ?", models.ObjectFailed).
		Set("error_str = ?", clipText(in.Error, 1000)).Set("last_updated = ?", models.Now()).
		Where("id = ? AND destroyed = ? AND download_state <> ?", in.RefID, false, models.DownloadDownloaded).Exec(ctx)
	return err
}

// TemplateMarkDestroying marks a template's copies (in the zones, or all)
// destroyed, so that no download finishes into them, and lists them for
// TemplateDeleteFile. A retry lists the ones still being destroyed.
func (a *Templates) TemplateMarkDestroying(ctx context.Context, in TemplateZonesInput) ([]TemplateTarget, error) {
	q := a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).
		Set("destroyed = ?", true).Set("state = ?", models.ObjectDestroying).Set("last_updated = ?", models.Now()).
		Where("template_id = ? AND destroyed = ?", in.TemplateID, false)
	if len(in.ZoneIDs) > 0 {
		q = q.Where("zone_id IN (?)", bun.In(in.ZoneIDs))
	}
	if _, err := q.Exec(ctx); err != nil {
		return nil, err
	}
	return a.targets(ctx, func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("ref.template_id = ? AND ref.destroyed = ? AND ref.state = ?", in.TemplateID, true, models.ObjectDestroying)
		if len(in.ZoneIDs) > 0 {
			q = q.Where("ref.zone_id IN (?)", bun.In(in.ZoneIDs))
		}
		return q
	})
}

// TemplateDeleteFile removes one destroyed copy's file from its store.
func (a *Templates) TemplateDeleteFile(ctx context.Context, in TemplateRefInput) error {
	var ref models.TemplateStoreRef
	if err := a.DB.NewSelect().Model(&ref).Where("id = ?", in.RefID).Scan(ctx); err != nil {
		return err
	}
	var t models.Template
	if err := a.DB.NewSelect().Model(&t).Where("id = ?", ref.TemplateID).WhereAllWithDeleted().Scan(ctx); err != nil {
		return err
	}
	_, desc, err := a.storeOf(ctx, ref.StoreID)
	if err != nil {
		return err
	}
	drv, err := a.ImageStores(desc.Provider)
	if err != nil {
		return storeFailure(err)
	}
	// The template's own directory: its image and any partial download an
	// interrupted attempt left for resuming.
	p := path.Dir(TemplateInstallPath(&t))
	if ref.InstallPath != "" {
		p = path.Dir(ref.InstallPath)
	}
	if _, err := heartbeatDuring(ctx, nil, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.Delete(ctx, desc, p)
	}); err != nil {
		return storeFailure(err)
	}
	_, err = a.DB.NewUpdate().Model((*models.TemplateStoreRef)(nil)).Set("state = ?", models.ObjectDestroyed).
		Set("last_updated = ?", models.Now()).Where("id = ?", ref.ID).Exec(ctx)
	return err
}

// TemplateFinishDelete drops the template from the zones (or all) and
// soft-deletes it once no zone holds it.
func (a *Templates) TemplateFinishDelete(ctx context.Context, in TemplateZonesInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewDelete().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ?", in.TemplateID)
		if len(in.ZoneIDs) > 0 {
			q = q.Where("zone_id IN (?)", bun.In(in.ZoneIDs))
		}
		if _, err := q.Exec(ctx); err != nil {
			return err
		}
		left, err := tx.NewSelect().Model((*models.TemplateZoneRef)(nil)).Where("template_id = ?", in.TemplateID).Count(ctx)
		if err != nil || left > 0 {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.Template)(nil)).Set("state = ?", models.TemplateInactive).
			Where("id = ?", in.TemplateID).Exec(ctx); err != nil {
			return err
		}
		_, err = tx.NewDelete().Model((*models.Template)(nil)).Where("id = ?", in.TemplateID).Exec(ctx)
		return err
	})
}

// TemplateExtractCheck finds a downloaded copy in the zone (or any) whose
// file is on its store, for an extract link.
func (a *Templates) TemplateExtractCheck(ctx context.Context, in TemplateZonesInput) (TemplateTarget, error) {
	ts, err := a.targets(ctx, func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("ref.template_id = ? AND ref.destroyed = ? AND ref.download_state = ?", in.TemplateID, false, models.DownloadDownloaded)
		return refsInZones(q, in.ZoneIDs)
	})
	if err != nil {
		return TemplateTarget{}, err
	}
	for _, t := range ts {
		var ref models.TemplateStoreRef
		if err := a.DB.NewSelect().Model(&ref).Where("id = ?", t.RefID).Scan(ctx); err != nil {
			return TemplateTarget{}, err
		}
		_, desc, err := a.storeOf(ctx, ref.StoreID)
		if err != nil {
			return TemplateTarget{}, err
		}
		drv, err := a.ImageStores(desc.Provider)
		if err != nil {
			return TemplateTarget{}, storeFailure(err)
		}
		if _, err := drv.Stat(ctx, desc, ref.InstallPath); err == nil {
			return t, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return TemplateTarget{}, storeFailure(err)
		}
	}
	return TemplateTarget{}, cserr.Temporal(cserr.Param("the template is not downloaded in the zone: extract it once it is ready"))
}
