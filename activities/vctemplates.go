package activities

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
)

// VCenterClusterOf is the zone's vSphere cluster on the vCenter and
// datacenter a vsphere:// template source names (its credentials and
// certificate trust reach the source); nil when the zone has none.
func VCenterClusterOf(ctx context.Context, db bun.IDB, zoneID int64, src vsphere.TemplateSource) (*models.Cluster, error) {
	var clusters []models.Cluster
	if err := db.NewSelect().Model(&clusters).Where("zone_id = ? AND hypervisor_type = ? AND url IS NOT NULL AND url <> ''", zoneID, hypervisor.TypeVMware).
		Order("id").Scan(ctx); err != nil {
		return nil, err
	}
	for i, cl := range clusters {
		u, err := url.Parse(cl.URL)
		if err == nil && strings.EqualFold(u.Host, src.Host) && cl.VMwareDatacenter == src.Datacenter {
			return &clusters[i], nil
		}
	}
	return nil, nil
}

// TemplateVCenterInput names a template whose URL is a vsphere:// source.
type TemplateVCenterInput struct {
	TemplateID int64
}

// TemplateVCenterVerify checks a vsphere:// template source in the vCenter
// of each zone the template is registered in (through the zone's cluster
// on that vCenter) and marks the template ready there: its copies on the
// zone's image stores DOWNLOADED with no file (nothing is downloaded; each
// datastore clones the source when a VM first needs it), and its size the
// source's root disk. A source that is missing fails it, non-retryably.
func (a *Templates) TemplateVCenterVerify(ctx context.Context, in TemplateVCenterInput) error {
	var t models.Template
	if err := a.DB.NewSelect().Model(&t).Where("id = ?", in.TemplateID).Scan(ctx); err != nil {
		return err
	}
	src, err := vsphere.ParseTemplateSource(t.URL)
	if err != nil {
		return hostFail(cserr.ParamError, "%v", err)
	}
	var zrefs []models.TemplateZoneRef
	if err := a.DB.NewSelect().Model(&zrefs).Where("template_id = ?", t.ID).Scan(ctx); err != nil {
		return err
	}
	drv, err := a.Pools(hypervisor.TypeVMware)
	if err != nil {
		return driverFailure(err)
	}
	insp, ok := drv.(interface {
		InspectTemplateSource(ctx context.Context, vc storage.Pool, raw string) (int64, error)
	})
	if !ok {
		return hostFail(cserr.UnsupportedAction, "the VMware storage driver cannot read vCenter templates")
	}
	var size int64
	for _, zr := range zrefs {
		cl, err := VCenterClusterOf(ctx, a.DB, zr.ZoneID, src)
		if err != nil {
			return err
		}
		if cl == nil {
			return hostFail(cserr.ParamError, "vCenter %s (datacenter %s) is not a vCenter of the template's zone: add its cluster first", src.Host, src.Datacenter)
		}
		login, err := clusterLoginOf(ctx, a.DB, a.Secrets, cl.ID)
		if err != nil {
			return err
		}
		vc := storage.Pool{Name: cl.Name, Type: models.PoolVMFS, URL: cl.URL, Username: login.Username, Password: login.Password}
		size, err = callHeartbeating(ctx, func(ctx context.Context) (int64, error) {
			return insp.InspectTemplateSource(ctx, vc, t.URL)
		})
		if err != nil {
			if errors.Is(err, hypervisor.ErrNotFound) || errors.Is(err, hypervisor.ErrInvalid) {
				return hostFail(cserr.ParamError, "Template source %s: %s", t.URL, opMessage(err))
			}
			return driverFailure(err)
		}
	}
	now := models.Now()
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*models.TemplateStoreRef)(nil)).
			Set("download_state = ?", models.DownloadDownloaded).Set("download_pct = 100").
			Set("state = ?", models.ObjectReady).Set("install_path = ''").
			Set("size = ?", size).Set("physical_size = 0").Set("error_str = ''").Set("last_updated = ?", now).
			Where("template_id = ? AND destroyed = ?", t.ID, false).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*models.Template)(nil)).Set("size = ?", size).Where("id = ?", t.ID).Exec(ctx)
		return err
	})
}

// opMessage is a driver error's own text, without the driver and
// operation names an operator has no use for.
func opMessage(err error) string {
	var oe *hypervisor.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
