from cherrybench.cli import main

raise SystemExit(main())
