from console.run import main

raise SystemExit(main())
