package api

import (
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
)

// Download links: extractTemplate answers them, and copyTemplate's
// destination stores download from them. The token is sealed with the
// server key and names a store copy and an expiry, so a link works for
// anyone holding it until it expires, and for nothing else.
func init() {
	extraRoutes = append(extraRoutes, func(s *Server, r *gin.Engine) {
		r.GET(activities.DownloadPath+":token", s.serveDownload)
		r.HEAD(activities.DownloadPath+":token", s.serveDownload)
	})
}

func (s *Server) serveDownload(c *gin.Context) {
	refID, expires, err := activities.ParseDownloadToken(s.Secrets, c.Param("token"))
	if err != nil {
		c.String(http.StatusForbidden, "invalid download link\n")
		return
	}
	if time.Now().After(expires) {
		c.String(http.StatusGone, "download link expired\n")
		return
	}
	ctx := c.Request.Context()
	var ref models.TemplateStoreRef
	err = s.DB.NewSelect().Model(&ref).Where("id = ? AND destroyed = ? AND download_state = ?", refID, false, models.DownloadDownloaded).Scan(ctx)
	if err != nil {
		c.String(http.StatusNotFound, "the template is no longer stored here\n")
		return
	}
	var st models.ImageStore
	if err := s.DB.NewSelect().Model(&st).Where("id = ?", ref.StoreID).Scan(ctx); err != nil {
		c.String(http.StatusNotFound, "the image store is gone\n")
		return
	}
	f, err := openStoredImage(&st, ref.InstallPath, filepath.Join(s.Cfg.DataDir, "mnt"))
	if err != nil {
		s.Log.Warn("cannot serve stored template", "ref", ref.ID, "store", st.UUID, "err", err)
		c.String(http.StatusNotFound, "the template file cannot be read from its image store\n")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		c.String(http.StatusInternalServerError, "cannot read the template file\n")
		return
	}
	name := path.Base(ref.InstallPath)
	c.Header("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(name, `"`, "")+`"`)
	http.ServeContent(c.Writer, c.Request, name, fi.ModTime(), f)
}

// openStoredImage opens a stored image of a store this server reaches as a
// directory (file:///dir, or an NFS export mounted under mountRoot as the
// worker's image store driver expects it); the path must stay inside the
// store. Stores the server cannot reach that way (S3, Swift) cannot be
// served yet: the image store driver interface has no read operation.
func openStoredImage(st *models.ImageStore, rel, mountRoot string) (*os.File, error) {
	dir, _, err := storage.LocalDir(st.URL, mountRoot)
	if err != nil {
		return nil, err
	}
	full := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+rel)))
	if !strings.HasPrefix(full, filepath.Clean(dir)+string(filepath.Separator)) {
		return nil, os.ErrNotExist
	}
	return os.Open(full)
}
