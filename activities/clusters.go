package activities

import (
	"context"
	"database/sql"
	"errors"
	"sort"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
)

// ClusterDiscoverInput names a cluster managed elsewhere (a vCenter
// cluster) whose hosts are to be discovered and added.
type ClusterDiscoverInput struct {
	ClusterUUID string
	// Adding is true for addCluster: a cluster whose manager cannot be
	// read is removed again rather than left empty.
	Adding bool
	Actor  Actor
}

// ClusterDiscovery is what discovery found: one addHost input per host,
// with the UUID of the host's row when it is in the inventory already (a
// rediscovery adds only what is new).
type ClusterDiscovery struct {
	ClusterName string
	Hosts       []HostCreateInput
}

// HostDiscover asks the cluster's driver for its hosts (DiscoverHosts with
// the cluster's URL and credentials). It writes nothing: each host is then
// added by the addHost steps.
func (a *Hosts) HostDiscover(ctx context.Context, in ClusterDiscoverInput) (ClusterDiscovery, error) {
	var cl models.Cluster
	if err := a.DB.NewSelect().Model(&cl).Where("uuid = ?", in.ClusterUUID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ClusterDiscovery{}, hostFail(cserr.ParamError, "Unable to find cluster by id %s", in.ClusterUUID)
		}
		return ClusterDiscovery{}, err
	}
	login, err := clusterLoginOf(ctx, a.DB, a.Secrets, cl.ID)
	if err != nil {
		return ClusterDiscovery{}, err
	}
	target := hypervisor.Cluster{ID: cl.UUID, URL: cl.URL, Username: login.Username, Password: login.Password, Details: login.Details}
	sealed := login.Sealed
	if target.ZoneID, err = uuidOf(ctx, a.DB, "zones", cl.ZoneID); err != nil {
		return ClusterDiscovery{}, err
	}
	if target.PodID, err = uuidOf(ctx, a.DB, "pods", cl.PodID); err != nil {
		return ClusterDiscovery{}, err
	}
	drv, err := a.Hypervisors(cl.HypervisorType)
	if err != nil {
		return ClusterDiscovery{}, driverFailure(err)
	}
	found, err := callHeartbeating(ctx, func(ctx context.Context) ([]hypervisor.Host, error) {
		return drv.DiscoverHosts(ctx, target)
	})
	if err != nil {
		return ClusterDiscovery{}, driverFailure(err)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].URL < found[j].URL })
	out := ClusterDiscovery{ClusterName: cl.Name}
	rs := models.ResourceEnabled
	if cl.AllocationState == models.AllocationDisabled {
		rs = models.ResourceDisabled
	}
	for _, h := range found {
		id, err := discoveredHostUUID(ctx, a.DB, cl.ID, h.URL)
		if err != nil {
			return out, err
		}
		out.Hosts = append(out.Hosts, HostCreateInput{
			HostUUID: id, ClusterUUID: cl.UUID, Hypervisor: cl.HypervisorType, URL: h.URL,
			Username: target.Username, PasswordSealed: sealed, ResourceState: rs, Actor: in.Actor,
		})
	}
	return out, nil
}

// discoveredHostUUID is the UUID of the cluster's host row of that URL,
// or a new one.
func discoveredHostUUID(ctx context.Context, db bun.IDB, clusterID int64, url string) (string, error) {
	var h models.Host
	err := db.NewSelect().Model(&h).Column("uuid").Where("cluster_id = ? AND url = ?", clusterID, url).Limit(1).Scan(ctx)
	switch {
	case err == nil:
		return h.UUID, nil
	case errors.Is(err, sql.ErrNoRows):
		return models.NewUUID(), nil
	}
	return "", err
}

// ClusterRemoveEmpty removes a cluster that holds no host and no pool (an
// addCluster whose hosts could not be discovered); one that holds some, or
// is gone, is left as it is.
func (a *Hosts) ClusterRemoveEmpty(ctx context.Context, in ClusterDiscoverInput) error {
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var cl models.Cluster
		if err := tx.NewSelect().Model(&cl).Where("uuid = ?", in.ClusterUUID).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		}
		for _, m := range []any{(*models.Host)(nil), (*models.StoragePool)(nil)} {
			n, err := tx.NewSelect().Model(m).Where("cluster_id = ?", cl.ID).Count(ctx)
			if err != nil || n > 0 {
				return err
			}
		}
		if _, err := tx.NewDelete().Model((*models.ClusterDetail)(nil)).Where("cluster_id = ?", cl.ID).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewDelete().Model(&cl).WherePK().Exec(ctx)
		return err
	})
}

// clusterLogin is what a cluster's details say about reaching its manager
// (a vCenter): the user, the password decrypted and as stored, and the
// other details.
type clusterLogin struct {
	Username, Password, Sealed string
	Details                    map[string]string
}

// clusterLoginOf reads a cluster's details, decrypting its password.
func clusterLoginOf(ctx context.Context, db bun.IDB, box *secrets.Box, clusterID int64) (clusterLogin, error) {
	out := clusterLogin{Details: map[string]string{}}
	var details []models.ClusterDetail
	if err := db.NewSelect().Model(&details).Where("cluster_id = ?", clusterID).Scan(ctx); err != nil {
		return out, err
	}
	for _, d := range details {
		switch d.Name {
		case "username":
			out.Username = d.Value
		case "password":
			out.Sealed = d.Value
			if box == nil {
				return out, errors.New("worker has no server key to decrypt cluster credentials")
			}
			pw, err := box.Decrypt(d.Value)
			if err != nil {
				return out, temporal.NewNonRetryableApplicationError("cannot decrypt the cluster's password: "+err.Error(), "Invalid", nil)
			}
			out.Password = pw
		default:
			out.Details[d.Name] = d.Value
		}
	}
	return out, nil
}
