package api

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// GET /docs/api serves the API reference generated from the command table
// (the same declarations that drive validation and listApis): HTML, or
// Markdown with ?format=md.
func init() {
	extraRoutes = append(extraRoutes, func(s *Server, r *gin.Engine) {
		r.GET("/docs/api", s.serveAPIDocs)
	})
}

// docEntry is one command in the docs.
type docEntry struct {
	APIView
	Access string
}

func docEntries() []docEntry {
	cmds := Commands()
	out := make([]docEntry, 0, len(cmds))
	for _, c := range cmds {
		out = append(out, docEntry{APIView: DescribeAPI(c), Access: accessText(c)})
	}
	return out
}

// accessText says who may call a command unless role rules say otherwise.
func accessText(c *Command) string {
	if c.NoAuth {
		return "anyone (no credentials)"
	}
	var who []string
	for _, a := range []struct {
		bit  Access
		name string
	}{{AccessRootAdmin, "root admin"}, {AccessDomainAdmin, "domain admin"}, {AccessUser, "user"}, {AccessReadOnly, "read-only user"}} {
		if c.Access&a.bit != 0 {
			who = append(who, a.name)
		}
	}
	return strings.Join(who, ", ")
}

func (s *Server) serveAPIDocs(c *gin.Context) {
	entries := docEntries()
	if f := c.Query("format"); f == "md" || f == "markdown" {
		c.Data(http.StatusOK, "text/markdown; charset=utf-8", markdownDocs(entries))
		return
	}
	var buf bytes.Buffer
	if err := docsHTML.Execute(&buf, map[string]any{"Version": Version, "APIs": entries}); err != nil {
		s.Log.Error("cannot render API docs", "err", err)
		writeError(c, "errorresponse", cserr.Internal("cannot render the API docs"))
		return
	}
	c.Data(http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
}

func markdownDocs(entries []docEntry) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Nimbus API reference (%s)\n\n", Version)
	b.WriteString("CloudStack-compatible API at `/client/api?command=<name>&response=json`, signed with an API key or called with a login session. Generated from the command table; `listApis` answers the same.\n\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", e.Name, mdCell(e.Description))
		async := "no"
		if e.IsAsync {
			async = "yes (answers a jobid)"
		}
		fmt.Fprintf(&b, "- async: %s\n- callable by default by: %s\n", async, e.Access)
		if e.Since != "" {
			fmt.Fprintf(&b, "- since: %s\n", e.Since)
		}
		b.WriteString("\n")
		if len(e.Params) > 0 {
			b.WriteString("| parameter | type | required | description |\n|---|---|---|---|\n")
			for _, p := range e.Params {
				fmt.Fprintf(&b, "| %s | %s | %t | %s |\n", p.Name, p.Type, p.Required, mdCell(p.Description))
			}
			b.WriteString("\n")
		}
		if len(e.Response) > 0 {
			b.WriteString("| response field | type | description |\n|---|---|---|\n")
			for _, f := range e.Response {
				fmt.Fprintf(&b, "| %s | %s | %s |\n", f.Name, f.Type, mdCell(f.Description))
			}
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

var docsHTML = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Nimbus API reference</title>
<style>
body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code{background:#f4f4f4;padding:0 .2em}nav a{margin-right:.8em;display:inline-block}
h2{border-top:1px solid #ddd;padding-top:1em}.meta{color:#555}
</style></head><body>
<h1>Nimbus API reference <small>({{.Version}})</small></h1>
<p>CloudStack-compatible API at <code>/client/api?command=&lt;name&gt;&amp;response=json</code>, signed with an API key
or called with a login session. This page is generated from the command table; <code>listApis</code> answers the same.</p>
<nav>{{range .APIs}}<a href="#{{.Name}}">{{.Name}}</a> {{end}}</nav>
{{range .APIs}}
<h2 id="{{.Name}}">{{.Name}}</h2>
<p>{{.Description}}</p>
<p class="meta">async: {{if .IsAsync}}yes (answers a jobid){{else}}no{{end}} · callable by default by: {{.Access}}{{if .Since}} · since {{.Since}}{{end}}</p>
{{if .Params}}<table><tr><th>parameter</th><th>type</th><th>required</th><th>description</th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td>{{.Type}}</td><td>{{.Required}}</td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
{{if .Response}}<table><tr><th>response field</th><th>type</th><th>description</th></tr>
{{range .Response}}<tr><td><code>{{.Name}}</code></td><td>{{.Type}}</td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
{{end}}
</body></html>
`))
