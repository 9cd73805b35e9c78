from pgjobs.cli import main

raise SystemExit(main())
