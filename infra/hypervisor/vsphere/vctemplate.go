package vsphere

import (
	"context"
	"net/url"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// SourceScheme is the URL scheme of a template whose source is a template
// (or VM) already in a vCenter: vsphere://<vcenter>[:port]/<datacenter>/<path>.
const SourceScheme = "vsphere"

// TemplateSource is a vsphere:// template URL read.
type TemplateSource struct {
	Host       string // the vCenter, host[:port], as its cluster's URL names it
	Datacenter string
	// Path is the VM's inventory path under the datacenter's VM folder
	// ("Templates/centos9"); a bare name may also be anywhere below it.
	Path string
}

// IsTemplateSource tells whether a template URL names a vCenter VM.
func IsTemplateSource(raw string) bool {
	scheme, _, ok := strings.Cut(raw, "://")
	return ok && strings.EqualFold(scheme, SourceScheme)
}

// ParseTemplateSource reads vsphere://<vcenter>[:port]/<datacenter>/<path>.
// The URL carries no credentials: the vCenter's come from its cluster.
func ParseTemplateSource(raw string) (TemplateSource, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url: %v", err)
	}
	const want = "want vsphere://<vcenter>/<datacenter>/<folder path/>template name"
	if !strings.EqualFold(u.Scheme, SourceScheme) || u.Host == "" {
		return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url %q: %s", u.Redacted(), want)
	}
	if u.User != nil {
		return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url %q: must not carry credentials (the vCenter's cluster has them)", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url %q: takes no query (the vCenter's cluster says how its certificate is trusted)", u.Redacted())
	}
	var parts []string
	for _, p := range strings.Split(strings.Trim(u.EscapedPath(), "/"), "/") {
		s, err := url.PathUnescape(p)
		if err != nil || s == "" || s == "." || s == ".." {
			return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url %q: %s", u.Redacted(), want)
		}
		parts = append(parts, s)
	}
	if len(parts) < 2 {
		return TemplateSource{}, hypervisor.NewError(hypervisor.ErrInvalid, "template url %q: %s", u.Redacted(), want)
	}
	esc := make([]string, len(parts)-1)
	for i, p := range parts[1:] {
		esc[i] = escapeName(p)
	}
	return TemplateSource{Host: u.Host, Datacenter: parts[0], Path: strings.Join(esc, "/")}, nil
}

// findSource finds the source VM: by inventory path under the
// datacenter's VM folder, or, for a bare name, by name anywhere below it
// (an operator names templates, not folders; two of that name are
// ambiguous and refused).
func (c *conn) findSource(ctx context.Context, src TemplateSource) (*mo.VirtualMachine, error) {
	const op = "TemplateSource"
	dc, err := c.datacenter(ctx, src.Datacenter)
	if err != nil {
		return nil, err
	}
	props := []string{"name", "config.template", "config.hardware.device"}
	pc := property.DefaultCollector(c.client())
	ref, err := object.NewSearchIndex(c.client()).FindByInventoryPath(ctx, "/"+escapeName(src.Datacenter)+"/vm/"+src.Path)
	if err != nil {
		return nil, classify(op, src.Path, err)
	}
	var vm mo.VirtualMachine
	if ref != nil {
		if ref.Reference().Type != "VirtualMachine" {
			return nil, hypervisor.Errorf(driverName, op, src.Path, hypervisor.ErrInvalid, "%s in datacenter %s is a %s, not a template or VM", src.Path, src.Datacenter, ref.Reference().Type)
		}
		if err := pc.RetrieveOne(ctx, ref.Reference(), props, &vm); err != nil {
			return nil, classify(op, src.Path, err)
		}
		return &vm, nil
	}
	notFound := hypervisor.Errorf(driverName, op, src.Path, hypervisor.ErrNotFound, "no template or VM %s in datacenter %s of vCenter %s", src.Path, src.Datacenter, src.Host)
	if strings.Contains(src.Path, "/") {
		return nil, notFound
	}
	var d mo.Datacenter
	if err := pc.RetrieveOne(ctx, dc.Reference(), []string{"vmFolder"}, &d); err != nil {
		return nil, classify(op, src.Datacenter, err)
	}
	v, err := view.NewManager(c.client()).CreateContainerView(ctx, d.VmFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, classify(op, src.Path, err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	// Names first (cheap on a large inventory), then the one that matches.
	var all []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &all); err != nil {
		return nil, classify(op, src.Path, err)
	}
	name := strings.ReplaceAll(strings.ReplaceAll(src.Path, "%2f", "/"), "%25", "%")
	var vms []mo.VirtualMachine
	for _, x := range all {
		if x.Name == name {
			vms = append(vms, x)
		}
	}
	if len(vms) == 1 {
		if err := pc.RetrieveOne(ctx, vms[0].Self, props, &vm); err != nil {
			return nil, classify(op, src.Path, err)
		}
		return &vm, nil
	}
	if len(vms) == 0 {
		return nil, notFound
	}
	return nil, hypervisor.Errorf(driverName, op, src.Path, hypervisor.ErrInvalid, "%d VMs are named %s in datacenter %s: give the template's folder path", len(vms), name, src.Datacenter)
}

// InspectTemplateSource checks that a vsphere:// template source exists
// in the vCenter vc reaches (vc.URL is its cluster's URL: host and how its
// certificate is trusted; Username, Password its login) and answers the
// size of its root disk. Nothing is copied.
func (p *Pool) InspectTemplateSource(ctx context.Context, vc storage.Pool, raw string) (int64, error) {
	const op = "InspectTemplateSource"
	src, err := ParseTemplateSource(raw)
	if err != nil {
		return 0, err
	}
	u, err := url.Parse(vc.URL)
	if err != nil {
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "vCenter url: %v", err)
	}
	if !strings.EqualFold(u.Host, src.Host) {
		return 0, hypervisor.Errorf(driverName, op, raw, hypervisor.ErrInvalid, "template source is on vCenter %s, not %s", src.Host, u.Host)
	}
	ep, err := parseEndpoint(u, vc.Username, vc.Password)
	if err != nil {
		return 0, err
	}
	ep.URL.Scheme = "https"
	if p.s == nil {
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "vsphere pool driver closed")
	}
	c, err := p.s.get(ctx, ep)
	if err != nil {
		return 0, err
	}
	vm, err := c.findSource(ctx, src)
	if err != nil {
		return 0, err
	}
	file, size := rootDisk(vm)
	if file == "" {
		return 0, hypervisor.Errorf(driverName, op, raw, hypervisor.ErrInvalid, "%s has no disk", vm.Name)
	}
	return size, nil
}

// cloneSource makes the template VM name on the datastore as a full clone
// of the vsphere:// source (CloneVM_Task into the datastore, powered off,
// not yet a template: CopyTemplateToPool snapshots and marks it as the OVA
// import's). The clone's task is saved before waiting, so a retried call
// reattaches (CopyTemplateToPool) instead of cloning twice.
func (p *Pool) cloneSource(ctx context.Context, t *dsTarget, raw, name string) (types.ManagedObjectReference, error) {
	const op = "CopyTemplateToPool"
	src, err := ParseTemplateSource(raw)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	if !strings.EqualFold(src.Host, t.c.ep.URL.Host) {
		// CloneVM_Task does not cross vCenters.
		return types.ManagedObjectReference{}, hypervisor.Errorf(driverName, op, raw, hypervisor.ErrInvalid, "template source is on vCenter %s, the datastore %s on %s", src.Host, t.dsName, t.c.ep.URL.Host)
	}
	vm, err := t.c.findSource(ctx, src)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	pool, host, folder, err := t.placement(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	spec := types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Datastore: &t.ds, Pool: &pool, Host: &host,
			// A full, flat copy: Nimbus's template stands on its own
			// (the source may be changed or deleted later).
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveAllDiskBackingsAndDisallowSharing)},
		PowerOn:  false,
		Template: false,
	}
	info, err := t.c.runTask(ctx, "clone:"+name, func(ctx context.Context) (types.ManagedObjectReference, error) {
		res, err := methods.CloneVM_Task(ctx, t.c.client(), &types.CloneVM_Task{This: vm.Self, Folder: folder, Name: name, Spec: spec})
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		return res.Returnval, nil
	})
	if err != nil {
		return types.ManagedObjectReference{}, classify(op, name, err)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return types.ManagedObjectReference{}, hypervisor.Errorf(driverName, op, name, hypervisor.ErrInvalid, "clone of %s answered no VM", vm.Name)
	}
	return ref, nil
}
