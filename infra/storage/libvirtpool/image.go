package libvirtpool

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// imageInfo is what the worker learns of an image file before uploading it.
type imageInfo struct {
	Format      string // qcow2 or raw
	FileBytes   int64  // bytes to upload
	VirtualSize int64  // the disk size the guest sees
}

// inspectImage reads an image's header and checks it against its declared
// format (qcow2, raw, iso; "" = as the header says). It refuses what would
// let a guest read the host: a qcow2 naming a backing file or an external
// data file, and a qcow2 declared raw (libvirt would probe it as qcow2).
func inspectImage(f *os.File, declared string) (imageInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return imageInfo{}, err
	}
	info := imageInfo{FileBytes: fi.Size(), VirtualSize: fi.Size()}
	hdr := make([]byte, 104)
	n, err := f.ReadAt(hdr, 0)
	if err != nil && err != io.EOF {
		return info, err
	}
	hdr = hdr[:n]
	isQCOW2 := len(hdr) >= 72 && bytes.Equal(hdr[:4], qcow2Magic)
	bad := func(format string, args ...any) (imageInfo, error) {
		return info, hypervisor.NewError(storage.ErrInvalid, format, args...)
	}
	switch d := strings.ToLower(declared); d {
	case "", formatQCOW2:
		if !isQCOW2 {
			if d == "" {
				info.Format = formatRaw
				return info, nil
			}
			return bad("the image is not qcow2 (no QFI header): %d bytes of something else", info.FileBytes)
		}
	case formatRaw, "iso", "img":
		if isQCOW2 {
			return bad("the image is declared %s but is qcow2", strings.ToUpper(d))
		}
		info.Format = formatRaw
		return info, nil
	default:
		return info, hypervisor.NewError(storage.ErrNotSupported, "image format %s: libvirt hosts take QCOW2, RAW or ISO", strings.ToUpper(d))
	}
	version := binary.BigEndian.Uint32(hdr[4:8])
	if version < 2 || version > 3 {
		return bad("qcow2 version %d is not supported", version)
	}
	if binary.BigEndian.Uint64(hdr[8:16]) != 0 {
		return bad("the qcow2 image names a backing file; flatten it first (qemu-img convert -O qcow2)")
	}
	if version == 3 && len(hdr) >= 80 && binary.BigEndian.Uint64(hdr[72:80])&(1<<2) != 0 {
		return bad("the qcow2 image uses an external data file")
	}
	info.Format = formatQCOW2
	info.VirtualSize = int64(binary.BigEndian.Uint64(hdr[24:32]))
	if info.VirtualSize <= 0 {
		return bad("the qcow2 image has no size")
	}
	return info, nil
}
