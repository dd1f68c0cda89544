module github.com/ostree-upload/ostree-upload

go 1.26.8

require (
	github.com/labstack/echo/v4 v4.13.4
	github.com/ostreedev/ostree-go v0.0.0-20210805093236-719684c64e4f
	github.com/spf13/pflag v1.0.7
	github.com/tus/tusd/v2 v2.10.1
	go.etcd.io/bbolt v1.4.3
	golang.org/x/sys v0.47.0
)

require (
	github.com/labstack/gommon v0.4.2 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasttemplate v1.2.2 // indirect
	golang.org/x/crypto v0.55.0 // indirect
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)
