package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf/importer"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// VolumeFolder is the datastore folder Nimbus keeps its volumes in:
// outside every VM's own folder, so that destroying a VM never takes a
// volume with it.
const VolumeFolder = "nimbus"

// TemplatePrefix starts the names of the template VMs Nimbus imports.
const TemplatePrefix = "nimbus-tpl-"

var _ storage.PoolDriver = (*Pool)(nil)

func init() {
	storage.RegisterPool(hypervisor.TypeVMware, func(cfg storage.Config) (storage.PoolDriver, error) {
		return NewPool(cfg), nil
	})
}

// Pool is the primary storage driver of vSphere: a pool is a datastore
// (VMFS, NFS or vSAN, whatever vCenter mounts), reached through vCenter.
// Volumes are vmdk files in the datastore's VolumeFolder; a template is
// imported once per datastore from its OVA as a template VM, and a root
// volume is a full copy of that template's disk (CopyVirtualDisk_Task).
type Pool struct {
	storage.UnsupportedPool
	s         *sessions
	mountRoot string
	imports   sync.Map // template VM name -> *sync.Mutex: one import at a time per datastore
	helpers   sync.Map // datastore id -> *helperSlots: one linked clone at a time per helper VM
}

// NewPool returns the driver; Options "mountroot" is where NFS image
// stores are mounted (to read OVAs from).
func NewPool(cfg storage.Config) *Pool {
	return &Pool{UnsupportedPool: storage.UnsupportedPool{DriverName: driverName}, s: acquireSessions(keepAliveOf(cfg.Options)),
		mountRoot: cfg.Options["mountroot"]}
}

// Type is VMware.
func (p *Pool) Type() string { return hypervisor.TypeVMware }

// Close drops the driver's hold on the shared sessions.
func (p *Pool) Close() error {
	if p.s != nil {
		p.s.release()
		p.s = nil
	}
	return nil
}

// dsTarget is a pool resolved to its datastore.
type dsTarget struct {
	c      *conn
	dcName string
	dc     *object.Datacenter
	ds     types.ManagedObjectReference
	dsName string
}

// path is the datastore path of a volume ("[ds] nimbus/<name>.vmdk"); a
// full datastore path is taken as it is when it is on this datastore, and
// names the same file here when it is on another: callers name a volume's
// copy on a target pool by the source's path (migrateVolume's undo deletes
// it there), and that must never reach the source.
func (t *dsTarget) path(name string) string {
	var dp object.DatastorePath
	if dp.FromString(name) {
		if dp.Datastore != t.dsName {
			dp.Datastore = t.dsName
			return dp.String()
		}
		return name
	}
	if !strings.HasSuffix(name, ".vmdk") {
		name += ".vmdk"
	}
	return (&object.DatastorePath{Datastore: t.dsName, Path: path.Join(VolumeFolder, name)}).String()
}

// target resolves a pool: vmfs://vcenter[:port]/<datacenter>/<datastore>
// (presetup://... alike). Credentials come from the pool (the API copies
// the vCenter's from its cluster) or from the host the call acts through.
func (p *Pool) target(ctx context.Context, pl storage.Pool) (*dsTarget, error) {
	u, err := url.Parse(pl.URL)
	if err != nil {
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "pool url %q: %v", pl.URL, err)
	}
	user, pw := pl.Username, pl.Password
	if user == "" && pl.Via != nil {
		user, pw = pl.Via.Username, pl.Via.Password
	}
	ep, err := parseEndpoint(u, user, pw)
	if err != nil {
		return nil, err
	}
	ep.URL.Scheme = "https"
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "pool url %q: want vmfs://vcenter/<datacenter>/<datastore>", u.Redacted())
	}
	if p.s == nil {
		return nil, hypervisor.NewError(hypervisor.ErrInvalid, "vsphere pool driver closed")
	}
	c, err := p.s.get(ctx, ep)
	if err != nil {
		return nil, err
	}
	t := &dsTarget{c: c, dcName: parts[0], dsName: parts[1]}
	if t.dc, err = c.datacenter(ctx, t.dcName); err != nil {
		return nil, err
	}
	if t.ds, err = c.find(ctx, "/"+escapeName(t.dcName)+"/datastore/"+escapeName(t.dsName), "datastore"); err != nil {
		return nil, err
	}
	return t, nil
}

// stats reads a datastore's capacity.
func (t *dsTarget) stats(ctx context.Context) (storage.PoolStats, error) {
	var ds mo.Datastore
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, t.ds, []string{"summary"}, &ds); err != nil {
		return storage.PoolStats{}, classify("PoolCapacity", t.dsName, err)
	}
	s := ds.Summary
	if !s.Accessible {
		return storage.PoolStats{}, hypervisor.Errorf(driverName, "PoolCapacity", t.dsName, hypervisor.ErrUnreachable, "vCenter reports the datastore inaccessible")
	}
	st := storage.PoolStats{CapacityBytes: s.Capacity, AvailableBytes: s.FreeSpace, UsedBytes: s.Capacity - s.FreeSpace}
	st.AllocatedBytes = st.UsedBytes + s.Uncommitted
	return st, nil
}

// CreatePool checks the datastore is there and accessible, makes the
// volume folder and reports capacity.
func (p *Pool) CreatePool(ctx context.Context, pl storage.Pool) (storage.PoolStats, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.PoolStats{}, err
	}
	st, err := t.stats(ctx)
	if err != nil {
		return st, err
	}
	dc := t.dc.Reference()
	_, err = methods.MakeDirectory(ctx, t.c.client(), &types.MakeDirectory{This: *t.c.client().ServiceContent.FileManager,
		Name: "[" + t.dsName + "] " + VolumeFolder, Datacenter: &dc, CreateParentDirectories: types.NewBool(true)})
	if err != nil && !fault.Is(err, &types.FileAlreadyExists{}) {
		return st, classify("CreatePool", t.dsName, err)
	}
	return st, nil
}

// ConnectPool checks that the host mounts the datastore: vCenter mounts
// it, Nimbus has nothing to do on the host.
func (p *Pool) ConnectPool(ctx context.Context, pl storage.Pool, h hypervisor.Host) error {
	t, err := p.target(ctx, pl)
	if err != nil {
		return err
	}
	loc, err := parseLocation(h.URL, t.c.ep.Username, t.c.ep.Password, true)
	if err != nil {
		return err
	}
	ref, err := t.c.find(ctx, loc.inventoryPath(), "ESXi host")
	if err != nil {
		return err
	}
	var hs mo.HostSystem
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"datastore"}, &hs); err != nil {
		return classify("ConnectPool", loc.Host, err)
	}
	for _, d := range hs.Datastore {
		if d == t.ds {
			return nil
		}
	}
	return hypervisor.Errorf(driverName, "ConnectPool", loc.Host, hypervisor.ErrInvalid, "host %s does not mount datastore %s", loc.Host, t.dsName)
}

// DisconnectPool has nothing to undo.
func (p *Pool) DisconnectPool(context.Context, storage.Pool, hypervisor.Host) error { return nil }

// DeletePool removes what Nimbus put on the datastore: its template VMs
// and the (empty) volume folder. The datastore itself stays.
func (p *Pool) DeletePool(ctx context.Context, pl storage.Pool) error {
	t, err := p.target(ctx, pl)
	if err != nil {
		return err
	}
	var ds mo.Datastore
	pc := property.DefaultCollector(t.c.client())
	if err := pc.RetrieveOne(ctx, t.ds, []string{"vm"}, &ds); err != nil {
		return classify("DeletePool", t.dsName, err)
	}
	if len(ds.Vm) > 0 {
		var vms []mo.VirtualMachine
		if err := pc.Retrieve(ctx, ds.Vm, []string{"name", "config.template"}, &vms); err != nil {
			return classify("DeletePool", t.dsName, err)
		}
		for _, vm := range vms {
			mine := strings.HasPrefix(vm.Name, TemplatePrefix) && strings.HasSuffix(vm.Name, "-"+t.ds.Value)
			if !mine && !isHelperName(t.ds, vm.Name) {
				continue
			}
			if err := t.destroyVM(ctx, vm.Self); err != nil {
				return classify("DeletePool", vm.Name, err)
			}
		}
	}
	dc := t.dc.Reference()
	_, err = t.c.runTask(ctx, "rmdir:"+t.ds.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.DeleteDatastoreFile_Task(ctx, t.c.client(), &types.DeleteDatastoreFile_Task{
			This: *t.c.client().ServiceContent.FileManager, Name: "[" + t.dsName + "] " + VolumeFolder, Datacenter: &dc})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && !fault.Is(err, &types.FileNotFound{}) {
		return classify("DeletePool", t.dsName, err)
	}
	return nil
}

// destroyVM destroys a VM of Nimbus's own (a template or the disk
// helper), first detaching any disk it holds that is not in its own
// folder: a volume left on the helper by an interrupted link stays.
func (t *dsTarget) destroyVM(ctx context.Context, ref types.ManagedObjectReference) error {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"name", "config.hardware.device"}, &vm); err != nil {
		if fault.Is(err, &types.ManagedObjectNotFound{}) {
			return nil
		}
		return err
	}
	var detach []types.BaseVirtualDeviceConfigSpec
	if vm.Config != nil {
		for _, d := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
			if b, ok := d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo); ok &&
				strings.Contains(b.GetVirtualDeviceFileBackingInfo().FileName, "] "+VolumeFolder+"/") {
				detach = append(detach, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d})
			}
		}
	}
	if len(detach) > 0 {
		_, err := t.c.runTask(ctx, "detach-all:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
			res, err := methods.ReconfigVM_Task(ctx, t.c.client(), &types.ReconfigVM_Task{This: ref, Spec: types.VirtualMachineConfigSpec{DeviceChange: detach}})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		})
		if err != nil {
			return err
		}
	}
	_, err := t.c.runTask(ctx, "destroy:"+ref.Value, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.Destroy_Task(ctx, t.c.client(), &types.Destroy_Task{This: ref})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if fault.Is(err, &types.ManagedObjectNotFound{}) {
		return nil
	}
	return err
}

// PoolCapacity reports the datastore's capacity.
func (p *Pool) PoolCapacity(ctx context.Context, pl storage.Pool) (storage.PoolStats, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.PoolStats{}, err
	}
	return t.stats(ctx)
}

// diskSize reads a vmdk's virtual size from its descriptor (one HTTP GET
// of the small descriptor file through vCenter's datastore access).
func (t *dsTarget) diskSize(ctx context.Context, file string) (int64, error) {
	var dp object.DatastorePath
	if !dp.FromString(file) {
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "%q is not a datastore path", file)
	}
	vc := t.c.client()
	u := object.NewDatastoreURL(*vc.URL(), t.dcName, dp.Datastore, dp.Path)
	rc, _, err := download(ctx, vc, u)
	if err != nil {
		if errors.Is(err, errNoFile) {
			return 0, hypervisor.Errorf(driverName, "VolumeInfo", file, hypervisor.ErrNotFound, "no such disk")
		}
		return 0, classify("VolumeInfo", file, err)
	}
	defer rc.Close()
	desc, err := vmdk.ParseDescriptor(io.LimitReader(rc, 64<<10))
	if err != nil {
		return 0, hypervisor.Errorf(driverName, "VolumeInfo", file, hypervisor.ErrInvalid, "not a vmdk descriptor: %v", err)
	}
	return desc.Capacity(), nil
}

// errNoFile is a datastore file download answered 404.
var errNoFile = errors.New("no such file")

// download GETs a datastore file through vCenter's file access. Unlike
// soap.Client.Download it closes the body of a refused request: left open,
// its connection stays checked out until the call's context ends and is
// then closed, so the next call dials and handshakes TLS again (once a
// deployment, on the check that the disk about to be made is not there).
func download(ctx context.Context, vc *vim25.Client, u *url.URL) (io.ReadCloser, int64, error) {
	fileCalls.Add(1)
	res, err := vc.DownloadRequest(ctx, u, &soap.DefaultDownload)
	if err != nil {
		return nil, 0, err
	}
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		_ = res.Body.Close()
		if res.StatusCode == http.StatusNotFound {
			return nil, 0, errNoFile
		}
		return nil, 0, fmt.Errorf("download(%s): %s", u, res.Status)
	}
	return res.Body, res.ContentLength, nil
}

// fileTask runs one VirtualDiskManager/FileManager task that makes key.
func (t *dsTarget) fileTask(ctx context.Context, key string, start func(ctx context.Context, vc *vimClient) (types.ManagedObjectReference, error)) error {
	_, err := t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
		return start(ctx, &vimClient{c: t.c, dc: t.dc.Reference()})
	})
	return err
}

// vimClient carries what the disk manager calls need.
type vimClient struct {
	c  *conn
	dc types.ManagedObjectReference
}

func (v *vimClient) vdm() types.ManagedObjectReference {
	return *v.c.client().ServiceContent.VirtualDiskManager
}

// CreateVolume creates a blank thin vmdk; one there already is success.
func (p *Pool) CreateVolume(ctx context.Context, pl storage.Pool, spec storage.VolumeSpec) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	if spec.SizeBytes <= 0 {
		return storage.Volume{}, hypervisor.NewError(hypervisor.ErrInvalid, "volume %s: size %d", spec.ID, spec.SizeBytes)
	}
	file := t.path(nameOf(spec))
	key := "create:" + file
	if _, err := t.c.reattach(ctx, key); err != nil {
		return storage.Volume{}, classify("CreateVolume", file, err)
	}
	if size, err := t.diskSize(ctx, file); err == nil {
		return t.volume(file, size, ""), nil
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return storage.Volume{}, err
	}
	diskType := string(types.VirtualDiskTypeThin)
	if spec.Provisioning == "fat" {
		diskType = string(types.VirtualDiskTypeEagerZeroedThick)
		if hypervisor.TasksFrom(ctx).Bounded() {
			return storage.Volume{}, hypervisor.ErrTaskPending // zeroing takes minutes, as a copy does
		}
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.CreateVirtualDisk_Task(ctx, t.c.client(), &types.CreateVirtualDisk_Task{This: v.vdm(), Name: file, Datacenter: &v.dc,
			Spec: &types.FileBackedVirtualDiskSpec{VirtualDiskSpec: types.VirtualDiskSpec{AdapterType: string(types.VirtualDiskAdapterTypeLsiLogic), DiskType: diskType},
				CapacityKb: (spec.SizeBytes + 1023) / 1024}})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return storage.Volume{}, classify("CreateVolume", file, err)
	}
	return t.volume(file, spec.SizeBytes, ""), nil
}

func nameOf(spec storage.VolumeSpec) string {
	if spec.Path != "" {
		return spec.Path
	}
	return spec.ID
}

func (t *dsTarget) volume(file string, size int64, backing string) storage.Volume {
	return storage.Volume{Path: file, Pool: t.dsName, Format: "vmdk", SizeBytes: size, BackingPath: backing}
}

// copyDisk copies a vmdk (CopyVirtualDisk_Task), reattaching to a copy an
// earlier attempt started; a destination already there is taken as the
// finished copy.
func (t *dsTarget) copyDisk(ctx context.Context, op, src, dst string) error {
	key := "copy:" + dst
	info, err := t.c.reattach(ctx, key)
	if err != nil || info != nil {
		return classify(op, dst, err)
	}
	if _, err := t.diskSize(ctx, dst); err == nil {
		return nil
	} else if !errors.Is(err, hypervisor.ErrNotFound) {
		return err
	}
	if hypervisor.TasksFrom(ctx).Bounded() {
		return hypervisor.ErrTaskPending // a copy takes minutes: started where its handle is kept
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.CopyVirtualDisk_Task(ctx, t.c.client(), &types.CopyVirtualDisk_Task{This: v.vdm(),
			SourceName: src, SourceDatacenter: &v.dc, DestName: dst, DestDatacenter: &v.dc})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	return classify(op, dst, err)
}

// extend grows a disk to size (ExtendVirtualDisk_Task); a disk that size
// or bigger is left alone.
func (t *dsTarget) extend(ctx context.Context, op, file string, size int64) (int64, error) {
	cur, err := t.diskSize(ctx, file)
	if err != nil {
		return 0, err
	}
	if size <= cur {
		return cur, nil
	}
	key := fmt.Sprintf("extend:%s:%d", file, size)
	// The size read above may predate an earlier attempt's extension still
	// running: when that one ends well, the disk is grown.
	if info, err := t.c.reattach(ctx, key); err != nil {
		return 0, classify(op, file, err)
	} else if info != nil {
		return size, nil
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.ExtendVirtualDisk_Task(ctx, t.c.client(), &types.ExtendVirtualDisk_Task{This: v.vdm(), Name: file, Datacenter: &v.dc,
			NewCapacityKb: (size + 1023) / 1024, EagerZero: types.NewBool(false)})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return 0, classify(op, file, err)
	}
	return size, nil
}

// CreateVolumeFromTemplate makes a root volume from the template's disk on
// the pool: a linked clone (a delta disk whose parent is the template's
// snapshotted base disk, made in no time and sharing its blocks) when the
// template VM has a snapshot, as every template Nimbus imports does, and
// the volume is not bigger than the template (vSphere grows no delta
// disk); otherwise a full copy (CopyVirtualDisk_Task) grown to the
// volume's size.
func (p *Pool) CreateVolumeFromTemplate(ctx context.Context, pl storage.Pool, templatePath string, spec storage.VolumeSpec) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	file := t.path(nameOf(spec))
	tplSize, err := t.templateSize(ctx, templatePath)
	if err != nil {
		return storage.Volume{}, err
	}
	if spec.SizeBytes <= tplSize {
		linkable, err := t.linkable(ctx, templatePath)
		if err != nil {
			return storage.Volume{}, err
		}
		if linkable {
			if err := p.linkDisk(ctx, t, templatePath, file); err != nil {
				return storage.Volume{}, err
			}
			return t.volume(file, tplSize, templatePath), nil
		}
	}
	if err := t.copyDisk(ctx, "CreateVolumeFromTemplate", templatePath, file); err != nil {
		return storage.Volume{}, err
	}
	size, err := t.extend(ctx, "CreateVolumeFromTemplate", file, spec.SizeBytes)
	if err != nil {
		return storage.Volume{}, err
	}
	return t.volume(file, size, ""), nil
}

// templateSize is the virtual size of a template's disk, remembered per
// session: an imported template's disk never changes (its VM is a
// template; linked clones hang off its snapshot).
func (t *dsTarget) templateSize(ctx context.Context, templatePath string) (int64, error) {
	if v, ok := t.c.flags.Load("size:" + templatePath); ok {
		return v.(int64), nil
	}
	size, err := t.diskSize(ctx, templatePath)
	if err != nil {
		return 0, err
	}
	t.c.flags.Store("size:"+templatePath, size)
	return size, nil
}

// linkable tells whether a template disk may parent linked clones: the
// template VM (named by the disk's folder) has a snapshot, so its base
// disk never changes. Remembered per session.
func (t *dsTarget) linkable(ctx context.Context, templatePath string) (bool, error) {
	if v, ok := t.c.flags.Load("linkable:" + templatePath); ok {
		return v.(bool), nil
	}
	var dp object.DatastorePath
	if !dp.FromString(templatePath) {
		return false, nil
	}
	folder, _, _ := strings.Cut(dp.Path, "/")
	ref, err := object.NewSearchIndex(t.c.client()).FindByInventoryPath(ctx, "/"+escapeName(t.dcName)+"/vm/"+escapeName(folder))
	if err != nil {
		return false, classify("CreateVolumeFromTemplate", templatePath, err)
	}
	ok := false
	if ref != nil && ref.Reference().Type == "VirtualMachine" {
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref.Reference(), []string{"snapshot"}, &vm); err != nil {
			return false, classify("CreateVolumeFromTemplate", templatePath, err)
		}
		ok = vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil
	}
	t.c.flags.Store("linkable:"+templatePath, ok)
	return ok, nil
}

// helper returns a disk helper VM of the datastore (see helperName): a
// powered-off VM with a SCSI controller and no disks of its own, which
// vSphere needs to create a linked clone's delta disk (a child disk is
// made by attaching it to some VM); created the first time.
func (p *Pool) helper(ctx context.Context, t *dsTarget, slot int) (types.ManagedObjectReference, error) {
	name := helperName(t.ds, slot)
	si := object.NewSearchIndex(t.c.client())
	vmPath := "/" + escapeName(t.dcName) + "/vm/" + escapeName(name)
	if r, ok := t.c.cache.get("path:" + vmPath); ok {
		return r, nil
	}
	find := func() (types.ManagedObjectReference, bool, error) {
		ref, err := si.FindByInventoryPath(ctx, vmPath)
		if err != nil || ref == nil {
			return types.ManagedObjectReference{}, false, err
		}
		t.c.cache.put("path:"+vmPath, ref.Reference())
		return ref.Reference(), true, nil
	}
	if _, err := t.c.reattach(ctx, "helper:"+name); err != nil {
		return types.ManagedObjectReference{}, classify("CreateVolumeFromTemplate", name, err)
	}
	if r, ok, err := find(); err != nil || ok {
		return r, classify("CreateVolumeFromTemplate", name, err)
	}
	pool, host, folder, err := t.placement(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		SharedBus: types.VirtualSCSISharingNoSharing, ScsiCtlrUnitNumber: 7,
		VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: -100}},
	}}
	cs := types.VirtualMachineConfigSpec{Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest64), NumCPUs: 1, MemoryMB: 4,
		Annotation:   "Nimbus: makes linked-clone disks on datastore " + t.dsName + "; holds none. Do not power on.",
		Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + t.dsName + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl}}}
	info, err := t.c.runTask(ctx, "helper:"+name, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.CreateVM_Task(ctx, t.c.client(), &types.CreateVM_Task{This: folder, Config: cs, Pool: pool, Host: &host})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		if fault.Is(err, &types.DuplicateName{}) { // another worker made it meanwhile
			if r, ok, ferr := find(); ferr == nil && ok {
				return r, nil
			}
		}
		return types.ManagedObjectReference{}, classify("CreateVolumeFromTemplate", name, err)
	}
	ref := info.Result.(types.ManagedObjectReference)
	t.c.cache.put("path:"+vmPath, ref)
	return ref, nil
}

// placement is where Nimbus puts its own VMs on a datastore: the root
// resource pool of the first host that mounts it, that host, and the
// datacenter's VM folder.
func (t *dsTarget) placement(ctx context.Context) (pool, host, folder types.ManagedObjectReference, err error) {
	pc := property.DefaultCollector(t.c.client())
	var ds mo.Datastore
	if err = pc.RetrieveOne(ctx, t.ds, []string{"host"}, &ds); err != nil {
		return pool, host, folder, classify("place", t.dsName, err)
	}
	if len(ds.Host) == 0 {
		return pool, host, folder, hypervisor.Errorf(driverName, "place", t.dsName, hypervisor.ErrInvalid, "no host mounts datastore %s", t.dsName)
	}
	host = ds.Host[0].Key
	var hs mo.HostSystem
	if err = pc.RetrieveOne(ctx, host, []string{"parent"}, &hs); err != nil {
		return pool, host, folder, classify("place", t.dsName, err)
	}
	var cr mo.ComputeResource
	if err = pc.RetrieveOne(ctx, *hs.Parent, []string{"resourcePool"}, &cr); err != nil || cr.ResourcePool == nil {
		return pool, host, folder, classify("place", t.dsName, err)
	}
	var dc mo.Datacenter
	if err = pc.RetrieveOne(ctx, t.dc.Reference(), []string{"vmFolder"}, &dc); err != nil {
		return pool, host, folder, classify("place", t.dsName, err)
	}
	return *cr.ResourcePool, host, dc.VmFolder, nil
}

// linkDisk makes file a delta disk whose parent is the template's disk:
// attached to the datastore's helper VM as a child disk (ReconfigVM_Task,
// file operation create), then detached from it again, the file kept. A
// retry reattaches to the first task, finds the disk made, and detaches
// it from the helper if an earlier attempt stopped in between.
func (p *Pool) linkDisk(ctx context.Context, t *dsTarget, parent, file string) error {
	slot, release, err := p.acquireHelper(ctx, t.ds)
	if err != nil {
		return err
	}
	defer release()
	helper, err := p.helper(ctx, t, slot)
	if err != nil {
		return err
	}
	key := "link:" + file
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify("CreateVolumeFromTemplate", file, err)
	}
	devices := func() (object.VirtualDeviceList, error) {
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, helper, []string{"config.hardware.device"}, &vm); err != nil {
			return nil, classify("CreateVolumeFromTemplate", file, err)
		}
		return object.VirtualDeviceList(vm.Config.Hardware.Device), nil
	}
	reconfigure := func(key string, change *types.VirtualDeviceConfigSpec) error {
		_, err := t.c.runTask(ctx, key, func(ctx context.Context) (types.ManagedObjectReference, error) {
			res, err := methods.ReconfigVM_Task(ctx, t.c.client(), &types.ReconfigVM_Task{This: helper,
				Spec: types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{change}}})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		})
		return classify("CreateVolumeFromTemplate", file, err)
	}
	attached := func(devs object.VirtualDeviceList) types.BaseVirtualDevice {
		for _, d := range devs.SelectByType((*types.VirtualDisk)(nil)) {
			if b, ok := d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo); ok && b.GetVirtualDeviceFileBackingInfo().FileName == file {
				return d
			}
		}
		return nil
	}
	devs, err := devices()
	if err != nil {
		return err
	}
	if attached(devs) == nil {
		if _, err := t.diskSize(ctx, file); errors.Is(err, hypervisor.ErrNotFound) {
			ctrl := devs.PickController((*types.VirtualSCSIController)(nil))
			if ctrl == nil {
				return hypervisor.Errorf(driverName, "CreateVolumeFromTemplate", file, hypervisor.ErrCapacity, "the disk helper VM %s has no free SCSI slot", helperName(t.ds, slot))
			}
			disk := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: -1, Backing: &types.VirtualDiskFlatVer2BackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file},
				DiskMode:                     string(types.VirtualDiskModePersistent),
				ThinProvisioned:              types.NewBool(true),
				Parent: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: parent},
					DiskMode:                     string(types.VirtualDiskModePersistent),
				},
			}}}
			devs.AssignController(disk, ctrl)
			if err := reconfigure(key, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
				FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk}); err != nil {
				// An attempt whose task reference was lost (a quick step's
				// worker that died) may have made the disk meanwhile.
				if errors.Is(err, hypervisor.ErrTaskPending) {
					return err
				}
				if _, serr := t.diskSize(ctx, file); serr != nil {
					return err
				}
				return p.unlinkElsewhere(ctx, t, -1, file)
			}
			if devs, err = devices(); err != nil {
				return err
			}
		} else if err != nil {
			return err
		} else if err := p.unlinkElsewhere(ctx, t, slot, file); err != nil {
			// Made by an earlier attempt on another helper, which it may
			// still hold.
			return err
		}
	}
	if d := attached(devs); d != nil {
		return reconfigure("unlink:"+file, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d})
	}
	return nil
}

// ResizeVolume grows a disk; vSphere shrinks none.
func (p *Pool) ResizeVolume(ctx context.Context, pl storage.Pool, file string, size int64) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	file = t.path(file)
	cur, err := t.diskSize(ctx, file)
	if err != nil {
		return storage.Volume{}, err
	}
	if size < cur {
		return storage.Volume{}, hypervisor.Errorf(driverName, "ResizeVolume", file, hypervisor.ErrInvalid, "vSphere does not shrink disks (%d < %d bytes)", size, cur)
	}
	if size, err = t.extend(ctx, "ResizeVolume", file, size); err != nil {
		return storage.Volume{}, err
	}
	return t.volume(file, size, ""), nil
}

// DeleteVolume deletes a vmdk (DeleteVirtualDisk_Task); a missing one is
// success.
func (p *Pool) DeleteVolume(ctx context.Context, pl storage.Pool, file string) error {
	t, err := p.target(ctx, pl)
	if err != nil {
		return err
	}
	file = t.path(file)
	key := "delete:" + file
	if _, err := t.c.reattach(ctx, key); err != nil {
		return classify("DeleteVolume", file, err)
	}
	if strings.HasSuffix(file, ".iso") {
		// An ISO's copy (uploadISO) is a plain file, not a virtual disk.
		err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
			res, err := methods.DeleteDatastoreFile_Task(ctx, t.c.client(), &types.DeleteDatastoreFile_Task{
				This: *t.c.client().ServiceContent.FileManager, Name: file, Datacenter: &v.dc})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		})
		if err != nil && (fault.Is(err, &types.FileNotFound{}) || fault.Is(err, &types.NotFound{})) {
			return nil
		}
		return classify("DeleteVolume", file, err)
	}
	err = t.fileTask(ctx, key, func(ctx context.Context, v *vimClient) (types.ManagedObjectReference, error) {
		res, err := methods.DeleteVirtualDisk_Task(ctx, t.c.client(), &types.DeleteVirtualDisk_Task{This: v.vdm(), Name: file, Datacenter: &v.dc})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil && !fault.Is(err, &types.FileNotFound{}) && !fault.Is(err, &types.NotFound{}) {
		return classify("DeleteVolume", file, err)
	}
	if err != nil {
		// No descriptor: an extent a dead restore left (restore.go writes
		// the descriptor last) goes too.
		if err := t.deleteFile(ctx, strings.TrimSuffix(file, ".vmdk")+"-flat.vmdk"); err != nil {
			return classify("DeleteVolume", file, err)
		}
	}
	// Its snapshots' copies go with it (see snapshots.go).
	return classify("DeleteVolume", file, t.deleteSnapshots(ctx, file))
}

// VolumeInfo reports a vmdk's virtual size.
func (p *Pool) VolumeInfo(ctx context.Context, pl storage.Pool, file string) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	file = t.path(file)
	size, err := t.diskSize(ctx, file)
	if err != nil {
		return storage.Volume{}, err
	}
	return t.volume(file, size, ""), nil
}

// ListVolumes lists the vmdk files of the volume folder and the template
// VMs imported into the datastore.
func (p *Pool) ListVolumes(ctx context.Context, pl storage.Pool) ([]storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return nil, err
	}
	pc := property.DefaultCollector(t.c.client())
	var ds mo.Datastore
	if err := pc.RetrieveOne(ctx, t.ds, []string{"browser", "vm"}, &ds); err != nil {
		return nil, classify("ListVolumes", t.dsName, err)
	}
	var out []storage.Volume
	folder := "[" + t.dsName + "] " + VolumeFolder
	res, err := t.c.runTask(ctx, "list:"+folder, func(ctx context.Context) (types.ManagedObjectReference, error) {
		r, err := methods.SearchDatastore_Task(ctx, t.c.client(), &types.SearchDatastore_Task{This: ds.Browser, DatastorePath: folder,
			SearchSpec: &types.HostDatastoreBrowserSearchSpec{MatchPattern: []string{"*.vmdk"}, Details: &types.FileQueryFlags{FileSize: true}}})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return r.Returnval, nil
	})
	if err != nil && !fault.Is(err, &types.FileNotFound{}) {
		return nil, classify("ListVolumes", t.dsName, err)
	}
	if err == nil {
		if r, ok := res.Result.(types.HostDatastoreBrowserSearchResults); ok {
			for _, f := range r.File {
				fi := f.GetFileInfo()
				if strings.HasSuffix(fi.Path, "-flat.vmdk") || strings.HasSuffix(fi.Path, "-delta.vmdk") {
					continue
				}
				file := folder + "/" + fi.Path
				v := t.volume(file, 0, "")
				if size, err := t.diskSize(ctx, file); err == nil {
					v.SizeBytes = size
				}
				v.AllocatedBytes = fi.FileSize
				out = append(out, v)
			}
		}
	}
	if len(ds.Vm) > 0 {
		var vms []mo.VirtualMachine
		if err := pc.Retrieve(ctx, ds.Vm, []string{"name", "config.hardware.device"}, &vms); err != nil {
			return nil, classify("ListVolumes", t.dsName, err)
		}
		for i := range vms {
			if !strings.HasPrefix(vms[i].Name, TemplatePrefix) || !strings.HasSuffix(vms[i].Name, "-"+t.ds.Value) {
				continue
			}
			if file, size := rootDisk(&vms[i]); file != "" {
				v := t.volume(file, size, "")
				v.Template = true
				out = append(out, v)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// rootDisk is the file and size of a VM's first disk: its base disk, the
// one a snapshot froze, when it has a delta on top.
func rootDisk(vm *mo.VirtualMachine) (string, int64) {
	if vm.Config == nil {
		return "", 0
	}
	for _, d := range object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		x := d.(*types.VirtualDisk)
		if b, ok := x.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			for b.Parent != nil {
				b = b.Parent
			}
			return b.FileName, x.CapacityInBytes
		}
		if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			return b.GetVirtualDeviceFileBackingInfo().FileName, x.CapacityInBytes
		}
	}
	return "", 0
}

// CopyVolume copies a disk to another datastore of the same vCenter (a
// cold Storage vMotion of a stopped VM's disk: the VM is undefined while
// stopped); the copy keeps the file name, the source stays.
func (p *Pool) CopyVolume(ctx context.Context, src storage.Pool, file string, dst storage.Pool, spec storage.VolumeSpec, pr storage.ProgressFunc) (storage.Volume, error) {
	s, err := p.target(ctx, src)
	if err != nil {
		return storage.Volume{}, err
	}
	d, err := p.target(ctx, dst)
	if err != nil {
		return storage.Volume{}, err
	}
	if s.c != d.c {
		return storage.Volume{}, hypervisor.Errorf(driverName, "CopyVolume", file, hypervisor.ErrNotSupported, "pools %s and %s are on different vCenters", src.Name, dst.Name)
	}
	from := s.path(file)
	var dp object.DatastorePath
	dp.FromString(from)
	to := d.path(path.Base(dp.Path))
	size, err := s.diskSize(ctx, from)
	if err != nil {
		return storage.Volume{}, err
	}
	pr.Report(0, size)
	if err := d.copyDisk(ctx, "CopyVolume", from, to); err != nil {
		return storage.Volume{}, err
	}
	pr.Report(size, size)
	return d.volume(to, size, ""), nil
}

// templateName is the template VM of a Nimbus template on a datastore.
func templateName(templateID string, ds types.ManagedObjectReference) string {
	return TemplatePrefix + templateID + "-" + ds.Value
}

// CopyTemplateToPool imports a template's OVA from secondary storage into
// the datastore once, as a template VM (OVF import through an NFC lease,
// then MarkAsTemplate), or clones it there from its vsphere:// source (a
// template or VM of the same vCenter); later calls find it. The answer's path is the
// template's disk, which CreateVolumeFromTemplate copies.
func (p *Pool) CopyTemplateToPool(ctx context.Context, tpl storage.Template, pl storage.Pool, pr storage.ProgressFunc) (storage.Volume, error) {
	t, err := p.target(ctx, pl)
	if err != nil {
		return storage.Volume{}, err
	}
	if strings.EqualFold(tpl.Format, "iso") {
		return p.uploadISO(ctx, t, tpl, pr)
	}
	if strings.EqualFold(tpl.Format, "vmdk") {
		return p.copyDiskTemplate(ctx, t, tpl, pr) // made from a snapshot (restore.go)
	}
	if f := strings.ToLower(tpl.Format); f != "ova" {
		return storage.Volume{}, hypervisor.Errorf(driverName, "CopyTemplateToPool", tpl.ID, hypervisor.ErrNotSupported, "VMware templates are OVA or VMDK (from a snapshot), not %s", tpl.Format)
	}
	name := templateName(tpl.ID, t.ds)
	mu, _ := p.imports.LoadOrStore(name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	// A clone from a vCenter source that an earlier attempt started: wait
	// for it rather than take its VM for a broken import.
	var ref types.ManagedObjectReference
	if IsTemplateSource(tpl.URL) {
		info, err := t.c.reattach(ctx, "clone:"+name)
		if err != nil {
			return storage.Volume{}, classify("CopyTemplateToPool", name, err)
		}
		if info != nil {
			ref, _ = info.Result.(types.ManagedObjectReference)
		}
	}
	si := object.NewSearchIndex(t.c.client())
	vmPath := "/" + escapeName(t.dcName) + "/vm/" + escapeName(name)
	if ref.Value == "" {
		found, err := si.FindByInventoryPath(ctx, vmPath)
		if err != nil {
			return storage.Volume{}, classify("CopyTemplateToPool", name, err)
		}
		if found != nil {
			var vm mo.VirtualMachine
			if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, found.Reference(), []string{"name", "config.template", "config.hardware.device"}, &vm); err != nil {
				return storage.Volume{}, classify("CopyTemplateToPool", name, err)
			}
			if vm.Config != nil && vm.Config.Template {
				return t.templateVolume(&vm)
			}
			// An import that did not finish: start over.
			if err := t.destroyVM(ctx, found.Reference()); err != nil {
				return storage.Volume{}, classify("CopyTemplateToPool", name, err)
			}
		}
	}
	switch {
	case ref.Value != "": // the earlier attempt's clone: snapshot and mark it
	case IsTemplateSource(tpl.URL):
		if ref, err = p.cloneSource(ctx, t, tpl.URL, name); err != nil {
			return storage.Volume{}, err
		}
	default:
		dir, _, err := storage.LocalDir(tpl.Source.Store.URL, p.mountRoot)
		if err != nil {
			return storage.Volume{}, err
		}
		file := path.Join(dir, path.Clean("/"+tpl.Source.Path))
		if _, err := os.Stat(file); err != nil {
			return storage.Volume{}, hypervisor.Errorf(driverName, "CopyTemplateToPool", tpl.ID, hypervisor.ErrNotFound, "template file: %v", err)
		}
		if ref, err = t.importOVA(ctx, file, name, pr); err != nil {
			return storage.Volume{}, err
		}
	}
	// A snapshot freezes the base disk, so volumes can be linked clones
	// of it (CreateVolumeFromTemplate).
	_, err = t.c.runTask(ctx, "snapshot:"+name, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.CreateSnapshot_Task(ctx, t.c.client(), &types.CreateSnapshot_Task{This: ref, Name: "nimbus-base",
			Description: "the base disk of the linked clones of this template", Memory: false, Quiesce: false})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return storage.Volume{}, classify("CopyTemplateToPool", name, err)
	}
	if _, err := methods.MarkAsTemplate(ctx, t.c.client(), &types.MarkAsTemplate{This: ref}); err != nil {
		return storage.Volume{}, classify("CopyTemplateToPool", name, err)
	}
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(t.c.client()).RetrieveOne(ctx, ref, []string{"name", "config.template", "config.hardware.device"}, &vm); err != nil {
		return storage.Volume{}, classify("CopyTemplateToPool", name, err)
	}
	return t.templateVolume(&vm)
}

// uploadISO copies an ISO from secondary storage into the datastore's
// volume folder as iso-<template uuid>.iso (HTTP PUT to the datastore, as
// govc datastore.upload does), which a VM's CD-ROM drive is backed by; a
// file of the same size there already is the copy. Deleting the pool
// deletes the folder, and the ISO with it.
func (p *Pool) uploadISO(ctx context.Context, t *dsTarget, tpl storage.Template, pr storage.ProgressFunc) (storage.Volume, error) {
	const op = "CopyTemplateToPool"
	if tpl.ID == "" {
		return storage.Volume{}, hypervisor.Errorf(driverName, op, tpl.Source.Path, hypervisor.ErrInvalid, "ISO has no id")
	}
	dir, _, err := storage.LocalDir(tpl.Source.Store.URL, p.mountRoot)
	if err != nil {
		return storage.Volume{}, err
	}
	file := path.Join(dir, path.Clean("/"+tpl.Source.Path))
	fi, err := os.Stat(file)
	if err != nil {
		return storage.Volume{}, hypervisor.Errorf(driverName, op, tpl.ID, hypervisor.ErrNotFound, "ISO file: %v", err)
	}
	rel := path.Join(VolumeFolder, "iso-"+tpl.ID+".iso")
	dsPath := (&object.DatastorePath{Datastore: t.dsName, Path: rel}).String()
	out := storage.Volume{Path: dsPath, Pool: t.dsName, Format: "iso", SizeBytes: fi.Size(), Template: true}
	ds := object.NewDatastore(t.c.client(), t.ds)
	ds.InventoryPath, ds.DatacenterPath = "/"+t.dcName+"/datastore/"+t.dsName, t.dcName
	if have, err := ds.Stat(ctx, rel); err == nil && have.GetFileInfo().FileSize == fi.Size() {
		pr.Report(fi.Size(), fi.Size())
		return out, nil
	}
	fm := object.NewFileManager(t.c.client())
	if err := fm.MakeDirectory(ctx, "["+t.dsName+"] "+VolumeFolder, t.dc, true); err != nil && !fault.Is(err, &types.FileAlreadyExists{}) {
		return storage.Volume{}, classify(op, dsPath, err)
	}
	up := soap.DefaultUpload // PUT
	up.ContentLength = fi.Size()
	if err := ds.UploadFile(ctx, file, rel, &up); err != nil {
		return storage.Volume{}, classify(op, dsPath, err)
	}
	pr.Report(fi.Size(), fi.Size())
	return out, nil
}

func (t *dsTarget) templateVolume(vm *mo.VirtualMachine) (storage.Volume, error) {
	file, size := rootDisk(vm)
	if file == "" {
		return storage.Volume{}, hypervisor.Errorf(driverName, "CopyTemplateToPool", vm.Name, hypervisor.ErrInvalid, "the template has no disk")
	}
	v := t.volume(file, size, "")
	v.Template = true
	return v, nil
}

// importOVA imports an OVA into the datastore as a VM of the given name,
// in the root resource pool of a host that mounts the datastore.
func (t *dsTarget) importOVA(ctx context.Context, file, name string, pr storage.ProgressFunc) (types.ManagedObjectReference, error) {
	vc := t.c.client()
	pool, host, folder, err := t.placement(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	arch := &importer.TapeArchive{Path: file}
	imp := importer.Importer{
		Log:          func(string) (int, error) { return 0, nil },
		Client:       vc,
		Datacenter:   t.dc,
		Datastore:    object.NewDatastore(vc, t.ds),
		ResourcePool: object.NewResourcePool(vc, pool),
		Host:         object.NewHostSystem(vc, host),
		Folder:       object.NewFolder(vc, folder),
		Archive:      arch,
	}
	n := name
	info, lease, err := imp.ImportVApp(ctx, "*.ovf", importer.Options{Name: &n, DiskProvisioning: string(types.OvfCreateImportSpecParamsDiskProvisioningTypeThin)})
	if err != nil {
		return types.ManagedObjectReference{}, classify("CopyTemplateToPool", name, err)
	}
	u := lease.StartUpdater(ctx, info)
	defer u.Done()
	var total, done int64
	sizes := make([]int64, len(info.Items))
	for i, item := range info.Items {
		f, size, err := arch.Open(item.Path)
		if err != nil {
			_ = lease.Abort(ctx, nil)
			return types.ManagedObjectReference{}, hypervisor.Errorf(driverName, "CopyTemplateToPool", name, hypervisor.ErrInvalid, "OVA member %s: %v", item.Path, err)
		}
		f.Close()
		sizes[i] = size
		total += size
	}
	pr.Report(0, total)
	for i, item := range info.Items {
		if err := t.upload(ctx, lease, arch, item, sizes[i], func(n int64) { pr.Report(done+n, total) }); err != nil {
			_ = lease.Abort(ctx, &types.LocalizedMethodFault{Fault: &types.FileFault{File: item.Path}})
			return types.ManagedObjectReference{}, classify("CopyTemplateToPool", name, err)
		}
		done += sizes[i]
	}
	if err := lease.Complete(ctx); err != nil {
		return types.ManagedObjectReference{}, classify("CopyTemplateToPool", name, err)
	}
	pr.Report(total, total)
	return info.Entity, nil
}

// upload sends one OVA member through the NFC lease, reporting bytes sent.
func (t *dsTarget) upload(ctx context.Context, lease *nfc.Lease, arch importer.Archive, item nfc.FileItem, size int64, sent func(int64)) error {
	f, _, err := arch.Open(item.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	sink := &progressSink{size: size, sent: sent}
	fileCalls.Add(1)
	return lease.Upload(ctx, item, f, soap.Upload{ContentLength: size, Progress: sink})
}

// progressSink turns govmomi's progress reports (percent) into bytes.
type progressSink struct {
	size int64
	sent func(int64)
}

func (s *progressSink) Sink() chan<- progress.Report {
	ch := make(chan progress.Report)
	go func() {
		for r := range ch {
			s.sent(int64(float64(s.size) * float64(r.Percentage()) / 100))
		}
	}()
	return ch
}
