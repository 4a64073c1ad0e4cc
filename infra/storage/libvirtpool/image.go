package libvirtpool

import (
	"os"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// imageInfo is what the worker learns of an image file before uploading it.
type imageInfo struct {
	Format      string // qcow2 or raw
	FileBytes   int64  // bytes to upload
	VirtualSize int64  // the disk size the guest sees
}

// inspectImage reads an image's header and checks it against its declared
// format (qcow2, raw, iso; "" = as the header says). Besides what
// storage.CheckImageFormat refuses, it refuses a qcow2 declared raw:
// libvirt probes a dir pool's files and would take it as qcow2, backing
// file and all.
func inspectImage(f *os.File, declared string) (imageInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return imageInfo{}, err
	}
	d := strings.ToLower(declared)
	switch d {
	case "", formatQCOW2, formatRaw, "iso", "img":
	default:
		return imageInfo{}, hypervisor.NewError(storage.ErrNotSupported, "image format %s: libvirt hosts take QCOW2, RAW or ISO", strings.ToUpper(d))
	}
	check := d
	if d == "" {
		check = formatQCOW2 // judged by its header below
	}
	hi, err := storage.CheckImageFormat(f, fi.Size(), check)
	if d == "" && hi.Format == formatRaw {
		err = nil
	}
	if err != nil {
		return imageInfo{}, err
	}
	if d != "" && d != formatQCOW2 && hi.Format == formatQCOW2 {
		return imageInfo{}, hypervisor.NewError(storage.ErrInvalid, "the image is declared %s but is qcow2", strings.ToUpper(d))
	}
	return imageInfo{Format: hi.Format, FileBytes: fi.Size(), VirtualSize: hi.VirtualSizeBytes}, nil
}
