from shoal.app.cli import main

raise SystemExit(main())
