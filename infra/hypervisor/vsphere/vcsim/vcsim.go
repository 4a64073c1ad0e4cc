// Package vcsim runs govmomi's vCenter simulator (simulator.VPX) in the
// calling process, shaped for Nimbus: one datacenter (DC0) with one
// cluster (DC0_C0) of ESXi hosts, shared datastores (LocalDS_0...) mounted
// on every host, the standard "VM Network" port group and a distributed
// one (DC0_DVPG0), served over https on a loopback port. cmd/vcsim, the
// tests and `nimbus bench vsphere` use it; the simulator models vCenter's
// API (tasks, inventory, datastore files) but runs no guest. Unlike the
// bare simulator it moves disks on a Storage vMotion (svmotion.go).
package vcsim

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/url"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Options shapes the simulated vCenter.
type Options struct {
	Hosts      int    // ESXi hosts in the cluster (default 3)
	Datastores int    // datastores shared by every host (default 2)
	VMs        int    // VMs per host created with the inventory (default 0)
	Listen     string // host:port (default 127.0.0.1:0, a free port)
	Username   string // the one login it accepts (default administrator@vsphere.local)
	Password   string // (default nimbus)
	// HostCores and HostMemoryMiB size every ESXi host (default: the
	// simulator's 2 cores of 2294 MHz and 4 GiB).
	HostCores     int
	HostMemoryMiB int64
}

// Sim is a running simulated vCenter.
type Sim struct {
	Model    *simulator.Model
	Server   *simulator.Server
	Host     string // host:port it answers on
	Username string
	Password string

	ignoreDiskLocators atomic.Bool // see IgnoreDiskLocators
}

// Start builds the inventory and serves it.
func Start(o Options) (*Sim, error) {
	if o.Hosts <= 0 {
		o.Hosts = 3
	}
	if o.Datastores <= 0 {
		o.Datastores = 2
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Username == "" {
		o.Username = "administrator@vsphere.local"
	}
	if o.Password == "" {
		o.Password = "nimbus"
	}
	m := simulator.VPX()
	m.Host = 0 // no standalone host: every host is in the cluster
	m.ClusterHost = o.Hosts
	m.Datastore = o.Datastores
	m.Machine = o.VMs
	if err := m.Create(); err != nil {
		return nil, err
	}
	for _, e := range m.Map().All("HostSystem") {
		hw := e.(*simulator.HostSystem).Summary.Hardware
		if o.HostCores > 0 {
			hw.NumCpuCores, hw.NumCpuThreads = int16(o.HostCores), int16(o.HostCores)
		}
		if o.HostMemoryMiB > 0 {
			hw.MemorySize = o.HostMemoryMiB << 20
		}
	}
	m.Service.TLS = new(tls.Config)
	// A login other than this one is refused, as a vCenter refuses a
	// wrong password (the simulator's default accepts any).
	m.Service.Listen = &url.URL{Host: o.Listen, User: url.UserPassword(o.Username, o.Password)}
	sim := &Sim{Model: m, Username: o.Username, Password: o.Password}
	m.Map().Handler = sim.relocateHandler
	sim.Server = m.Service.NewServer()
	sim.Host = sim.Server.URL.Host
	return sim, nil
}

// Close stops the server and removes the datastores' files.
func (s *Sim) Close() {
	s.Server.Close()
	s.Model.Remove()
}

// SDKURL is the SOAP endpoint with credentials, for govmomi clients.
func (s *Sim) SDKURL() *url.URL {
	return &url.URL{Scheme: "https", Host: s.Host, Path: "/sdk", User: url.UserPassword(s.Username, s.Password)}
}

// Thumbprint is the SHA-256 thumbprint of the simulator's self-signed
// TLS certificate, which Nimbus verifies it by.
func (s *Sim) Thumbprint() string { return soap.ThumbprintSHA256(s.Server.Certificate()) }

// ClusterURL is the URL addCluster takes for the simulated cluster, with
// the thumbprint of its certificate.
func (s *Sim) ClusterURL() string {
	return "https://" + s.Host + "/DC0/DC0_C0?thumbprint=" + s.Thumbprint()
}

// PoolURL is the URL createStoragePool takes for a datastore (LocalDS_0...),
// with the thumbprint of the simulator's certificate (the API adds the
// cluster's when a pool URL gives none).
func (s *Sim) PoolURL(datastore string) string {
	return "vmfs://" + s.Host + "/DC0/" + datastore + "?thumbprint=" + s.Thumbprint()
}

// Client logs a govmomi client in, for checks from outside Nimbus.
func (s *Sim) Client(ctx context.Context) (*govmomi.Client, error) {
	return govmomi.NewClient(ctx, s.SDKURL(), true)
}

// VMs lists the names of every VM and template in the inventory.
func (s *Sim) VMs(ctx context.Context) ([]string, error) {
	c, err := s.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Logout(context.Background()) }()
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Destroy(context.Background()) }()
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		return nil, err
	}
	out := make([]string, len(vms))
	for i, vm := range vms {
		out[i] = vm.Name
	}
	return out, nil
}

// Tasks reads the info of every task the simulator has run or runs whose
// description id (e.g. "VirtualDiskManager.copyVirtualDisk") is given.
func (s *Sim) Tasks(ctx context.Context, descriptionID string) ([]types.TaskInfo, error) {
	var refs []types.ManagedObjectReference
	for _, o := range s.Model.Map().AllReference("Task") {
		refs = append(refs, o.Reference())
	}
	if len(refs) == 0 {
		return nil, nil
	}
	c, err := s.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Logout(context.Background()) }()
	var tasks []mo.Task
	if err := property.DefaultCollector(c.Client).Retrieve(ctx, refs, []string{"info"}, &tasks); err != nil {
		return nil, err
	}
	var out []types.TaskInfo
	for _, t := range tasks {
		if t.Info.DescriptionId == descriptionID {
			out = append(out, t.Info)
		}
	}
	return out, nil
}

var ovf = template.Must(template.New("ovf").Parse(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="{{.Name}}-disk1.vmdk" ovf:id="file1" ovf:size="{{.Size}}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{{.MiB}}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{{.Name}}">
    <Info>A virtual machine</Info>
    <Name>{{.Name}}</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{{.Name}}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>64MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>64</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`))

// WriteOVA writes a small OVA (a tar of an OVF descriptor and one disk of
// diskMiB MiB) for the simulator, which imports an OVF's hardware but
// never reads its disks: the disk member is placeholder bytes.
func WriteOVA(w io.Writer, name string, diskMiB int) error {
	disk := bytes.Repeat([]byte("nimbus vcsim disk\n"), 64)
	var desc bytes.Buffer
	if err := ovf.Execute(&desc, map[string]any{"Name": name, "MiB": diskMiB, "Size": len(disk)}); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		body []byte
	}{{name + ".ovf", desc.Bytes()}, {name + "-disk1.vmdk", disk}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		if _, err := tw.Write(f.body); err != nil {
			return err
		}
	}
	return tw.Close()
}

// OVA returns WriteOVA's bytes.
func OVA(name string, diskMiB int) []byte {
	var b bytes.Buffer
	if err := WriteOVA(&b, name, diskMiB); err != nil {
		panic(fmt.Sprintf("vcsim: building an OVA: %v", err))
	}
	return b.Bytes()
}
